"""Course assignments from the book's exercises, graded with otter-grader.

``python -m assignments build`` turns each chapter's exercise and solution directives (and the
``# check:`` lines of its solutions) into a student notebook and an otter autograder;
``python -m assignments grade`` grades a folder of submitted notebooks offline;
``python -m assignments classroom`` builds the book without the solutions, for a course's site;
``python assignments/colab_parity.py`` runs the chapters and student notebooks in an environment
pinned to Google Colab's packages. See the README, "Teaching with this book".

Modules: ``source`` (parse a chapter), ``checks`` (compare an answer with the solution's value;
copied into the hidden tests and the student notebooks), ``notebooks`` (student and solution
notebooks, leak search), ``build`` (one kernel per chapter: values, files, self-check),
``grade`` and ``worker`` (otter run per submission), ``classroom`` (the edition without
solutions), ``colab_parity``.
"""
