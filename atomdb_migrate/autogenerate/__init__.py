"""Rank 7: writing step modules. `render` (the one renderer: operations
written out as Python source).

"""
