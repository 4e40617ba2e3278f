"""Line detection on a grid, and the base of the games won by a line (tictactoe, connect_four).

Cells are numbered row-major, `cell = row * cols + col`. A line is `length` cells in a row in
one of the four directions: horizontal (0, 1), vertical (1, 0), diagonal (1, 1), anti-diagonal
(1, -1). Tables are computed once per grid shape and cached.
"""

from __future__ import annotations

from functools import lru_cache

from stlm_selfplay.envs.base import Game

DIRECTIONS = ((0, 1), (1, 0), (1, 1), (1, -1))


@lru_cache(maxsize=None)
def line_table(rows: int, cols: int, length: int) -> tuple[tuple[tuple[int, ...], ...], tuple[tuple[tuple[int, ...], ...], ...]]:
    """(lines, lines_through): every line of the grid, and for each cell the lines through it.

    Count: a direction (dr, dc) gives (rows - (length-1)|dr|) * (cols - (length-1)|dc|) lines;
    3x3/3 has 8, 6x7/4 has 69.
    """
    lines = []
    for dr, dc in DIRECTIONS:
        for r in range(rows):
            for c in range(cols):
                end_r, end_c = r + dr * (length - 1), c + dc * (length - 1)
                if 0 <= end_r < rows and 0 <= end_c < cols:
                    lines.append(tuple((r + dr * i) * cols + (c + dc * i) for i in range(length)))
    through = tuple(tuple(line for line in lines if cell in line) for cell in range(rows * cols))
    return tuple(lines), through


def completes_line(board, cell: int, through) -> bool:
    """Whether the mark on `board[cell]` completes a line through `cell` (`through` from line_table)."""
    mark = board[cell]
    for line in through[cell]:  # plain loops: this is the hot path of every board game
        for i in line:
            if board[i] != mark:
                break
        else:
            return True
    return False


def has_line(board, mark, lines) -> bool:
    """Whether `mark` fills any of `lines` on `board`."""
    return any(all(board[i] == mark for i in line) for line in lines)


class LineGame(Game):
    """Two players put x (seat 0, first) and o marks on a grid; a completed line wins, a full board
    draws. Subclasses set `rows`, `cols`, `through` (from `line_table`) and which cell a move fills."""

    sides = ("x", "o")
    side_names = ("X (moves first)", "O")
    marks = "xo"
    _copied = ("board",)

    def _new_state(self, deal) -> None:
        self.board = ["."] * (self.rows * self.cols)
        self._won = False

    def natural_max_turns(self) -> int:
        return self.rows * self.cols

    def _place(self, cell: int) -> None:
        """Put the mover's mark on `cell`, note a completed line, pass the turn."""
        self.board[cell] = self.marks[self.current_player]
        self._won = completes_line(self.board, cell, self.through)
        self.current_player ^= 1

    def _payoffs(self):
        if self._won:  # the player who just moved (not current_player) completed a line
            return (1.0, -1.0) if self.current_player == 1 else (-1.0, 1.0)
        return (0.0, 0.0) if "." not in self.board else None

    def grid_rows(self) -> list[str]:
        """The board as text rows, top row first ("." empty)."""
        b = "".join(self.board)
        return [b[r * self.cols : (r + 1) * self.cols] for r in range(self.rows)]

    def board_text(self, player: int) -> str:
        return "|".join(self.grid_rows())

    def state_key(self):
        return ("".join(self.board), self.done, self._strikes)
