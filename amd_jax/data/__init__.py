"""Input pipelines: clip sources, sampling, masks as data, grain datasets."""
