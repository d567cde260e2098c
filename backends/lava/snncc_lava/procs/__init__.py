"""Custom Lava processes of the Loihi target, in their own folder because Lava discovers process
models by executing every .py file next to the process definition (docs/design.md §5).

Only `process.py` (interfaces) and `models.py` (implementations) live here; keep it that way.
"""
