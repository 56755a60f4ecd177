"""Data: the synthetic MIMIC-IV, MIMIC-IV and MEDS ingestion, and (later) timelines, lab bags, tasks."""
