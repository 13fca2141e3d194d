"""Select: the method registry (``registry``; every method registered in ``methods``), what a method reads from
a run (``inputs``), the algorithms (``algorithms``, ``csod``), the coverage options (``coverage``), ``select``.
"""
