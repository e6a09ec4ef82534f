"""augment: prefix/suffix concatenation of generic dialogues around visual speech token rows
(MoshiVis §3.3), as a function on one row and as a streaming transform; token rows read as numpy."""
from augment.concat import GenericPool, augment_stream, concat_augment, trim_turns, turn_ends
from augment.rows import RowStream, iter_token_rows, read_row_group

__all__ = ["GenericPool", "augment_stream", "concat_augment", "trim_turns", "turn_ends", "RowStream",
           "iter_token_rows", "read_row_group"]
