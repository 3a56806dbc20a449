"""Rank 4: the only subpackage that knows the drivers (PyMongo async, Motor, mongomock).

`mongo` (connections, bulk writes, counts) and `retry` (retrying a call after
a transient failure).

"""
