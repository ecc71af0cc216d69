"""MIMIC-IV-Note prepared into local Parquet: PhysioNet's CSV layout (multi-line quoted notes, commas, `___`), and
credentialed data never pushed."""

import csv
import gzip
import io

import pyarrow.parquet as pq
import pytest
from datasets import load_dataset

from clinical_modernbert.configs import PrepareMimicArguments
from clinical_modernbert.corpora.mimic import NOTE_COLUMNS, prepare_mimic
from clinical_modernbert.corpora.shards import push_dataset_dir

DISCHARGE = [
    ("10000032-DS-21", "10000032", "22595853", "DS", "21", "2180-05-07 00:00:00", "2180-05-09 15:26:00",
     " \nName:  ___                     Unit No:   ___\n \nAdmission Date:  ___              Discharge Date:   ___\n"
     " \nDate of Birth:  ___             Sex:   F\n \nService: MEDICINE\n \nAllergies: \nNo Known Allergies, "
     "\"per patient\"\n \nChief Complaint:\nWorsening ABD distension and pain\n"),
    ("10000032-DS-22", "10000032", "22841357", "DS", "22", "2180-06-27 00:00:00", "2180-07-01 10:15:00",
     "Discharge Diagnosis:\nAscites, cirrhosis (HCV, EtOH)\n\nFollowup Instructions:\n___\n"),
    ("10000032-DS-23", "10000032", "29079034", "DS", "23", "2180-07-25 00:00:00", "2180-07-25 21:42:00", "   "),
]
RADIOLOGY = [
    ("10000032-RR-14", "10000032", "22595853", "RR", "14", "2180-05-06 21:19:00", "2180-05-06 23:32:00",
     "EXAMINATION:  CHEST (PA AND LAT)\n\nINDICATION:  ___ with new onset ascites  // eval for infection\n\n"
     "IMPRESSION: \n\nNo acute cardiopulmonary process."),
]


def write_notes(path, rows, columns=NOTE_COLUMNS):
    """A note file as PhysioNet ships it: gzip CSV, a header, every field quoted where needed."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(out.getvalue().encode()))


@pytest.fixture
def mimic_folder(tmp_path):
    write_notes(tmp_path / "mimic-iv-note" / "note" / "discharge.csv.gz", DISCHARGE)
    write_notes(tmp_path / "mimic-iv-note" / "note" / "radiology.csv.gz", RADIOLOGY)
    return tmp_path / "mimic-iv-note"


def test_notes_keep_their_lines_commas_quotes_and_placeholders(mimic_folder, tmp_path):
    summary = prepare_mimic(PrepareMimicArguments(source=str(mimic_folder), output_dir=str(tmp_path / "out"),
                                                  num_shards=2))
    rows = pq.read_table(tmp_path / "out" / "data").to_pylist()
    expected = [{"note_id": r[0], "note_type": r[3], "text": r[7]} for r in DISCHARGE[:2] + RADIOLOGY]
    assert rows == expected  # the blank note is dropped; text byte for byte, `___` included
    assert summary["notes"] == {"discharge.csv.gz": 2, "radiology.csv.gz": 1}
    stream = load_dataset("parquet", data_files=str(tmp_path / "out" / "data" / "*.parquet"), split="train",
                          streaming=True)
    assert stream.num_shards == 2 and [r["text"] for r in stream] == [r["text"] for r in expected]
    card = (tmp_path / "out" / "README.md").read_text()
    assert "credentialed: true" in card and "never redistributed" in card


def test_credentialed_notes_are_never_pushed(mimic_folder, tmp_path):
    with pytest.raises(ValueError, match="refused: MIMIC-IV-Note is credentialed data"):
        PrepareMimicArguments(source=str(mimic_folder), push_to_hub="my-org/mimic")
    prepare_mimic(PrepareMimicArguments(source=str(mimic_folder), output_dir=str(tmp_path / "out"), num_shards=2))
    with pytest.raises(ValueError, match="holds credentialed data .* never redistributed"):
        push_dataset_dir(tmp_path / "out", "my-org/mimic")  # refused before any token or network is needed


def test_bad_input_is_named(mimic_folder, tmp_path):
    with pytest.raises(FileNotFoundError, match="note/discharge.csv.gz not found: --source must be the MIMIC-IV-Note"):
        prepare_mimic(PrepareMimicArguments(source=str(tmp_path / "mimic-iv-note-empty"), output_dir=str(tmp_path)))
    write_notes(mimic_folder / "note" / "radiology.csv.gz", [("1", "x")], columns=("id", "body"))
    with pytest.raises(ValueError, match=r"radiology.csv.gz has no column\(s\) \['note_id', 'note_type', 'text'\]"):
        prepare_mimic(PrepareMimicArguments(source=str(mimic_folder), output_dir=str(tmp_path / "out")))
