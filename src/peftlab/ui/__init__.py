"""`peftlab ui`: a local web dashboard over the run and sweep folders (Starlette + Jinja2, no database:
the folders are the truth, as for `peftlab report`).

Layer 11. May import: report, sweep and every layer below them.
"""
