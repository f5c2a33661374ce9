"""The stages dvc.yaml runs through `cds stage NAME`, one module each (`target`, `teacher`,
`fragments`, `student`, `evaluate`), each with `run(params, layout, progress)`.

One module per stage keeps each stage's code dependencies exact: dvc.yaml lists, per stage,
the source files its module imports (checked by tests/test_code_deps.py), so editing a module
makes only the stages that run it stale. Nothing is imported here for the same reason.
"""
