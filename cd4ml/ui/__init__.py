"""The run browser (`cd4ml ui`): read-only web pages over a project's ML Metadata, registry, data
root and serving logs (app.py: routes and export; data.py: what each page shows; graph.py: the
drawn DAGs; templates/: the pages)."""
