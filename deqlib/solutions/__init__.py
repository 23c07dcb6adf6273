"""The book's solutions to its exercises, one module per chapter (``ch01`` … ``ch11``).

They live here, not in the notebooks, so that a reader on Colab or in Jupyter meets each
exercise without its answer, and "Run all" never overwrites an attempt. In a chapter:

* a code exercise ends in ``fn = check.exercise(fn, …, expected=…, solution="ch04")``, which
  runs the book's function of the same name while the reader's is a stub (and checks it);
* the book's site shows each solution in a dropdown: a ``literalinclude`` of the function
  (``:pyobject:``) or an ``include`` of the answer's section in ``chNN.md``, between the
  markers ``<!-- exercise N -->`` and ``<!-- end -->``.

The notebook tests run every code solution through its check; ``tests/test_solutions.py``
checks that every solution a chapter includes exists and that each prose answer's claims
hold on a run of the code that supports it.
"""
