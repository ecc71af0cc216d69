"""Preparing the real corpora once into Parquet shards that `datasets` streams: PubMed from NCBI's XML files
(`pubmed_xml` parsing, `ncbi` listing and download, `pubmed` record rules and output) and MIMIC-IV-Note from
PhysioNet's CSV files (`mimic`); `shards` writes the shards both share."""
