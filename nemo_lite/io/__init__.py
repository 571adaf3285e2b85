"""nemo_lite.io: a run's configuration as data: captured at construction, saved as Fiddle JSON."""
