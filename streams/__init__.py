"""The pipeline: stages (validate, enrich, detect), runners and sinks."""
