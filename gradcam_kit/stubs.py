"""nbgrader's ``ClearSolutions``, with a stub that does not raise for code outside a function.

``nbgrader generate_assignment`` replaces each ``### BEGIN SOLUTION ... ### END SOLUTION``
region of a code cell by one stub, ``# YOUR CODE HERE`` then ``raise NotImplementedError()``.
That suits a function body: the student's call says clearly that the function is not written
yet. It does not suit an ungraded exploration cell (Parts 2 to 4, the bonus): a stub that raises
at the top level of a cell makes *Restart and Run All* fail on an honest notebook whose author
skipped an optional part.

:class:`RunnableClearSolutions` keeps nbgrader's stub for a region inside a block (indented, as in
the seven graded functions) and uses :attr:`~RunnableClearSolutions.top_level_code_stub`, a
comment, for a region at the top level of a cell. ``nbgrader_config.py`` puts it in place of
``ClearSolutions`` in the pipeline of ``generate_assignment`` (:func:`assignment_preprocessors`).
Everything else (markdown stubs, the checks on solution metadata, the configuration of
``ClearSolutions``, which a subclass reads too) is nbgrader's.
"""

from __future__ import annotations

from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import ClearSolutions
from traitlets import Dict

__all__ = ["RunnableClearSolutions", "assignment_preprocessors"]


class RunnableClearSolutions(ClearSolutions):
    """``ClearSolutions`` whose stub for a top-level solution region does not raise."""

    top_level_code_stub = Dict(
        dict(python="# YOUR CODE HERE"),
        help="The stub of a solution region at the top level of a code cell (not inside a block), by language",
    ).tag(config=True)

    def _replace_solution_region(self, cell: NotebookNode, language: str) -> bool:
        if cell.cell_type != "code" or language not in self.top_level_code_stub:
            return super()._replace_solution_region(cell, language)
        # The top-level regions first, with the quiet stub; nbgrader's own loop then replaces the
        # indented ones and checks that every region is well formed.
        lines, kept, inside, replaced = cell.source.split("\n"), [], False, False
        for line in lines:
            if inside and self.begin_solution_delimeter in line:
                raise RuntimeError("encountered nested begin solution statements")
            if not inside and self.begin_solution_delimeter in line and not line[:1].isspace():
                inside, replaced = True, True
                kept += self.top_level_code_stub[language].split("\n")
            elif inside and self.end_solution_delimeter in line:
                inside = False
            elif not inside:
                kept.append(line)
        if inside:  # no end marker: let nbgrader report it on the original text
            return super()._replace_solution_region(cell, language)
        cell.source = "\n".join(kept)
        return super()._replace_solution_region(cell, language) or replaced


def assignment_preprocessors() -> list[type]:
    """nbgrader's pipeline for ``generate_assignment``, with :class:`RunnableClearSolutions`."""
    from nbgrader.converters import GenerateAssignment

    default = GenerateAssignment.class_traits()["preprocessors"].default()
    return [RunnableClearSolutions if step is ClearSolutions else step for step in default]
