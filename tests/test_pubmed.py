"""PubMed prepared once: record rules over NCBI's real files and written updates, resume, shards, Hub round trip."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import REPO_ROOT, shared_path
from datasets import load_dataset
from datasets.distributed import split_dataset_by_node
from hub_server import SCRIPT_ONLY_PUBMED, HubServer
from test_pubmed_xml import article, write_xml

from clinical_modernbert.configs import PreparePubmedArguments
from clinical_modernbert.corpora import pubmed
from clinical_modernbert.corpora.pubmed import prepare_pubmed
from clinical_modernbert.corpora.pubmed_xml import Deletion, iter_file

BASELINE = "data/pubmed_xml/baseline"
UPDATES = "data/pubmed_xml/updatefiles"


def baseline_citations(name):
    return [r for r in iter_file(shared_path(f"{BASELINE}/{name}")) if not isinstance(r, Deletion)]


@pytest.fixture
def folders(tmp_path):
    """NCBI's real baseline folder, and an update folder: the real update files plus two the test writes. The first
    revises a citation, deletes two, brings Version 2 of another; the second brings back one of the deleted and an
    older Version 1 of the versioned one (which must not win)."""
    baseline = shared_path(BASELINE)
    updates = tmp_path / "updatefiles"
    updates.mkdir()
    for real in sorted(shared_path(UPDATES).glob("*.xml.gz")):
        (updates / real.name).symlink_to(real)
    cited = [r for r in baseline_citations("pubmed26n1334.xml.gz") if r["abstract"] and r["language"] == "eng"]
    revised, deleted, returned, versioned = cited[0]["pmid"], [cited[1]["pmid"], cited[2]["pmid"]], cited[1]["pmid"], \
        cited[3]["pmid"]
    write_xml(updates / "pubmed26n1336.xml.gz",
              [article(revised, title="Revised title."), article(versioned, title="Version two.", version=2)],
              deleted=deleted)
    write_xml(updates / "pubmed26n1337.xml.gz",
              [article(returned, title="Back again."), article(versioned, title="Stale version one.", version=1)])
    return baseline, updates, {"revised": revised, "deleted": deleted, "returned": returned, "versioned": versioned}


def reference(paths, languages=("eng",)):
    """The record rules written plainly: files in order, a deletion drops what came before, the highest version
    wins with ties to the later file; then the filters."""
    kept = {}
    for path in paths:
        for item in iter_file(path):
            if isinstance(item, Deletion):
                kept.pop(item.pmid, None)
            elif item["pmid"] not in kept or item["version"] >= kept[item["pmid"]][0]["version"]:
                kept[item["pmid"]] = (item, path.name)
    return {p: (r, f) for p, (r, f) in kept.items() if r["abstract"] and r["language"] in languages}


def read_rows(output_dir):
    return pq.read_table(Path(output_dir) / "data").to_pylist()


def prepare(source, output_dir, **kw):
    return prepare_pubmed(PreparePubmedArguments(source=str(source), output_dir=str(output_dir), **kw))


def test_record_rules_on_real_files_and_written_updates(folders, tmp_path):
    baseline, updates, pmids = folders
    summary = prepare(baseline, tmp_path / "out", updates=str(updates))
    rows = read_rows(tmp_path / "out")
    by_pmid = {row["pmid"]: row for row in rows}
    assert len(by_pmid) == len(rows)  # no PMID twice
    order = sorted(baseline.glob("*.xml.gz")) + sorted(updates.glob("*.xml.gz"))
    expected = reference(order)
    assert set(by_pmid) == set(expected) and summary["counts"]["written"] == len(rows)
    for pmid, (record, name) in expected.items():
        row = by_pmid[pmid]
        assert row["text"] == record["title"] + "\n" + record["abstract"] and row["source_file"] == name
        assert (row["title"], row["version"], row["year"]) == (record["title"], record["version"], record["year"])
    assert by_pmid[pmids["revised"]]["title"] == "Revised title."
    assert pmids["deleted"][1] not in by_pmid and by_pmid[pmids["returned"]]["title"] == "Back again."
    assert by_pmid[pmids["versioned"]]["title"] == "Version two." and by_pmid[pmids["versioned"]]["version"] == 2
    assert all(row["language"] == "eng" and row["abstract"] for row in rows)
    counts = summary["counts"]
    assert counts["deleted"] == 2 and counts["superseded"] == 3 and counts["without_abstract"] > 0
    assert counts["other_language"] > 0 and summary["baseline_year"] == 2026
    card = (tmp_path / "out" / "README.md").read_text()
    assert f"{len(rows)} citations" in card and "terms_and_conditions" in card and "languages: eng" in card


def test_filters_are_flags_and_parallel_parsing_gives_the_same_corpus(folders, tmp_path):
    baseline, updates, _ = folders
    prepare(baseline, tmp_path / "one", updates=str(updates), languages=["all"], keep_without_abstract=True)
    prepare(baseline, tmp_path / "two", updates=str(updates), languages=["all"], keep_without_abstract=True,
            num_proc=2)
    one, two = read_rows(tmp_path / "one"), read_rows(tmp_path / "two")
    assert one == two
    assert {r["language"] for r in one} >= {"eng", "ger"} and any(not r["abstract"] for r in one)
    assert all(r["text"] == r["title"] for r in one if not r["abstract"])


def test_rerun_parses_only_new_or_changed_files(folders, tmp_path, monkeypatch):
    baseline, updates, _ = folders
    prepare(baseline, tmp_path / "out", updates=str(updates))
    first = read_rows(tmp_path / "out")
    parsed = []

    def counting(path):
        parsed.append(Path(path).name)
        return iter_file(path)

    monkeypatch.setattr(pubmed, "iter_file", counting)
    prepare(baseline, tmp_path / "out", updates=str(updates))
    assert parsed == [] and read_rows(tmp_path / "out") == first
    write_xml(updates / "pubmed26n1337.xml.gz", [article(1, title="New.")])
    summary = prepare(baseline, tmp_path / "out", updates=str(updates))
    assert parsed == ["pubmed26n1337.xml.gz"] and summary["counts"]["written"] == len(first)  # -1 returned, +1 new
    manifest = json.loads((tmp_path / "out" / "parsed" / "manifest.json").read_text())
    assert sorted(manifest) == sorted(p.name for p in [*baseline.glob("*.gz"), *updates.glob("*.gz")])


def test_a_local_file_that_differs_from_its_md5_is_named(tmp_path):
    folder = tmp_path / "baseline"
    folder.mkdir()
    write_xml(folder / "pubmed26n0001.xml.gz", [article(1)])
    (folder / "pubmed26n0001.xml.gz.md5").write_text("MD5(pubmed26n0001.xml.gz)= " + "0" * 32 + "\n")
    with pytest.raises(ValueError, match="pubmed26n0001.xml.gz has MD5 .* download it again"):
        prepare(folder, tmp_path / "out")
    with pytest.raises(ValueError, match="--source is required"):
        PreparePubmedArguments()


@pytest.mark.parametrize("world_size", [1, 2, 4, 8, 16, 32, 64])
def test_each_process_streams_whole_shards_of_its_own(folders, tmp_path, world_size):
    baseline, updates, _ = folders
    prepare(baseline, tmp_path / "out", updates=str(updates), max_files=5)
    stream = load_dataset("parquet", data_files=str(tmp_path / "out" / "data" / "*.parquet"), split="train",
                          streaming=True)
    assert stream.num_shards == 64
    parts = [[row["pmid"] for row in split_dataset_by_node(stream, rank=rank, world_size=world_size)]
             for rank in range(world_size)]
    assert all(part.num_shards == 64 // world_size for part in
               (split_dataset_by_node(stream, rank=r, world_size=world_size) for r in range(world_size)))
    everything = [pmid for part in parts for pmid in part]
    assert len(everything) == len(set(everything)) == len(read_rows(tmp_path / "out"))


LOAD_FROM_HUB = """
import json, sys
from datasets import load_dataset
rows = list(load_dataset(sys.argv[1], split="train", streaming=True))
print(json.dumps(sorted(row["pmid"] for row in rows)))
"""


def test_push_to_hub_then_stream_it_back(folders, tmp_path):
    """The recipe's command line, pushed to a local Hub stand-in (private by default, token from HF_TOKEN, never on
    disk), then streamed back by `load_dataset(repo_id, streaming=True)`."""
    baseline, updates, _ = folders
    hf_home = tmp_path / "hf_home"
    with HubServer(token="hf_test") as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0",
               "HF_HOME": str(hf_home), "HF_TOKEN": "hf_test", "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
        command = [sys.executable, str(REPO_ROOT / "recipes" / "prepare_pubmed.py"), "--source", str(baseline),
                   "--updates", str(updates), "--output_dir", str(tmp_path / "out"), "--num_proc", "2",
                   "--push_to_hub", "test-org/pubmed"]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        streamed = subprocess.run([sys.executable, "-c", LOAD_FROM_HUB, "test-org/pubmed"], env=env,
                                  capture_output=True, text=True, timeout=300)
        assert streamed.returncode == 0, streamed.stderr[-3000:]
        repo, files = hub.repo("test-org/pubmed", "dataset"), hub.files("test-org/pubmed", "dataset")
    assert repo.private and len(hub.commits("test-org/pubmed", "dataset")) == 2  # created, then one upload commit
    assert sorted(files) == ["README.md"] + [f"data/train-{k:05d}-of-00064.parquet" for k in range(64)]
    assert "Save:" in done.stdout and "terms_and_conditions" in files["README.md"].decode()
    local = sorted(row["pmid"] for row in read_rows(tmp_path / "out"))
    assert json.loads(streamed.stdout.strip().splitlines()[-1]) == local
    assert not [p for p in hf_home.rglob("*") if "token" in p.name]


START_UP = """
from clinical_modernbert.configs import SourceConfig
from clinical_modernbert.data.sources import load_source
try:
    load_source(SourceConfig(name="pubmed", path="ncbi/pubmed"))
except ValueError as e:
    print(e)
"""


def test_a_script_only_hub_dataset_fails_at_start_naming_the_prepare_recipe(tmp_path):
    """A Hub repository laid out like the real `ncbi/pubmed` (a loading script and a README, no data)."""
    with HubServer() as hub:
        hub.add_repo("ncbi/pubmed", SCRIPT_ONLY_PUBMED)
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0",
               "HF_HOME": str(tmp_path / "hf_home")}
        done = subprocess.run([sys.executable, "-c", START_UP], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    message = done.stdout
    assert "'pubmed'" in message and "'ncbi/pubmed'" in message and "pubmed.py" in message
    assert "recipes/prepare_pubmed.py" in message


def test_base_config_reads_the_prepared_corpora():
    text = (REPO_ROOT / "recipes" / "configs" / "clinical_modernbert_base.yaml").read_text()
    sources = {s["name"]: s for s in yaml.safe_load(text)["sources"]}
    default_output = PreparePubmedArguments(source="x").output_dir
    assert sources["pubmed"]["path"] == "parquet"
    assert sources["pubmed"]["data_files"] == f"{default_output}/data/*.parquet"
    assert sources["mimic_iv_notes"]["path"] == "parquet"
    assert sources["mimic_iv_notes"]["data_files"] == "data/mimic-iv-note/data/*.parquet"
    assert "ncbi/pubmed" not in text


def test_recipe_config_and_flags_parse():
    from clinical_modernbert.parsing import parse_recipe_args

    config = REPO_ROOT / "recipes" / "configs" / "prepare_pubmed.yaml"
    (args,) = parse_recipe_args([PreparePubmedArguments], ["--config", str(config), "--languages", "eng", "fre",
                                                           "--max_files", "3", "--private", "false"])
    assert args.source == "https://ftp.ncbi.nlm.nih.gov/pubmed/baseline/" and args.updates.endswith("/updatefiles/")
    assert (args.languages, args.max_files, args.private, args.num_shards) == (["eng", "fre"], 3, False, 64)
    (defaults,) = parse_recipe_args([PreparePubmedArguments], ["--source", "folder"])
    assert defaults.private and defaults.languages == ["eng"] and not defaults.keep_without_abstract


def test_base_config_streams_the_folders_the_prepare_recipes_write(tmp_path, monkeypatch, embedded_tokenizer):
    """Run from a folder where both recipes wrote their defaults, the base config's PubMed and MIMIC sources stream."""
    from test_mimic import DISCHARGE, RADIOLOGY, write_notes

    from clinical_modernbert.configs import DataArguments, PrepareMimicArguments
    from clinical_modernbert.corpora.mimic import prepare_mimic
    from clinical_modernbert.data.stream import TrainingStream

    monkeypatch.chdir(tmp_path)
    (tmp_path / "baseline").mkdir()
    write_xml(tmp_path / "baseline" / "pubmed26n0001.xml.gz", [article(i, title=f"Title {i}.") for i in range(1, 40)])
    prepare_pubmed(PreparePubmedArguments(source="baseline"))
    write_notes(tmp_path / "mimic" / "note" / "discharge.csv.gz", DISCHARGE)
    write_notes(tmp_path / "mimic" / "note" / "radiology.csv.gz", RADIOLOGY)
    prepare_mimic(PrepareMimicArguments(source="mimic"))
    config = yaml.safe_load((REPO_ROOT / "recipes" / "configs" / "clinical_modernbert_base.yaml").read_text())
    sources = [s for s in config["sources"] if s["name"] in ("pubmed", "mimic_iv_notes")]
    args = DataArguments(sources=sources, max_seq_length=64, eval_fraction=0.0)
    rows = list(TrainingStream(args, embedded_tokenizer, passes=1))
    documents = [sum(row["stream_stats"][k][0] for row in rows) for k in range(len(sources))]  # per source
    assert [s["name"] for s in sources] == ["pubmed", "mimic_iv_notes"] and all(n > 0 for n in documents), documents


def test_a_legacy_medline_folder_is_prepared_too(tmp_path):
    legacy = shared_path("data/pubmed_xml/legacy")
    summary = prepare(legacy, tmp_path / "out", num_shards=4)
    rows = read_rows(tmp_path / "out")
    assert {r["pmid"] for r in rows} == set(reference(sorted(legacy.glob("*.xml.gz"))))
    assert summary["baseline_year"] == 2016 and summary["counts"]["citations_parsed"] == 604
    assert {r["source_file"] for r in rows} == {"medline16n0902.xml.gz"}
