"""The book's solutions to its exercises, one module per chapter (``ch01`` … ``ch11``).

They live here, not in the notebooks, so that a reader on Colab or in Jupyter meets each
exercise without its answer, and "Run all" never overwrites an attempt. In a chapter:

* a code exercise ends in ``fn = check.exercise(fn, …, expected=…, solution="ch04")``, which
  runs the book's function of the same name while the reader's is a stub (and checks it);
* the book's site shows each solution in a dropdown: a ``literalinclude`` of the function
  (``:pyobject:``) or an ``include`` of the answer's section in ``chNN.md``, between the
  markers ``<!-- exercise N -->`` and ``<!-- end -->``.
* an answer that quotes the numbers of a run of its solution shows that run's table, which
  :mod:`deqlib.solutions.record` writes to ``outputs/<chNN>_<function>.txt`` (``make
  notebooks`` re-records them; the notebooks never run a solution themselves).

The notebook tests run every code solution through its check; ``tests/test_solutions.py``
checks that every solution a chapter includes exists, that each prose answer's claims hold on a
run of the code that supports it, and that each stored table is what that run prints.
"""
