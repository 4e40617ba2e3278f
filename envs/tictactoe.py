"""Tic-tac-toe: x (seat 0) moves first; three in a row wins; a full board is a draw.

Actions are cell numbers "0".."8", row-major:  0 1 2 / 3 4 5 / 6 7 8.
Compact board: rows joined by "|", "." empty, e.g. `x.o|.x.|...`.
Players: random, minimax (uniform among all minimax-optimal moves; alias 'optimal').
"""

from __future__ import annotations

from functools import lru_cache

from stlm_selfplay.envs.lines import LineGame, has_line, line_table
from stlm_selfplay.envs.players import Player, uniform
from stlm_selfplay.envs.registry import register_game, register_player

LINES, THROUGH = line_table(3, 3, 3)
CELLS = tuple(str(i) for i in range(9))
# the square's 7 symmetries besides the identity, each as the image cell of every cell
# (cell r*3+c, (r, c) -> rotations by 90/180/270 degrees, the two mirrors, the two diagonal flips)
SYMMETRIES = tuple(tuple(r2 * 3 + c2 for r, c in ((i // 3, i % 3) for i in range(9)) for r2, c2 in [f(r, c)])
                   for f in (lambda r, c: (c, 2 - r), lambda r, c: (2 - r, 2 - c), lambda r, c: (2 - c, r),
                             lambda r, c: (r, 2 - c), lambda r, c: (2 - r, c), lambda r, c: (c, r),
                             lambda r, c: (2 - c, 2 - r)))


@register_game("tictactoe")
class TicTacToe(LineGame):
    tag = "ttt"
    title = "Tic-tac-toe"
    rows = cols = 3
    through = THROUGH

    def _legal(self) -> list[str]:
        return [cell for cell, mark in zip(CELLS, self.board) if mark == "."]

    def _apply(self, action: str) -> None:
        self._place(int(action))

    def board_text(self, player: int) -> str:
        b = "".join(self.board)  # the generic LineGame.board_text, unrolled: it runs every turn
        return f"{b[:3]}|{b[3:6]}|{b[6:]}"

    def symmetries(self) -> list[tuple["TicTacToe", dict[str, str]]]:
        """The 7 rotated and mirrored boards: board'[m(i)] = board[i], action i -> m(i)."""
        out = []
        for image_of in SYMMETRIES:
            image = self.clone()
            for i, mark in enumerate(self.board):
                image.board[image_of[i]] = mark
            image.history = [CELLS[image_of[int(a)]] if a in CELLS else a for a in self.history]
            image.refresh()
            out.append((image, {cell: CELLS[image_of[i]] for i, cell in enumerate(CELLS)}))
        return out

    def describe(self, player: int) -> str:
        rows = ["".join(CELLS[r * 3 + c] if mark == "." else mark for c, mark in enumerate(row)) for r, row in enumerate(self.grid_rows())]
        return "Three in a row wins. Board (numbers are free cells):\n" + "\n".join(rows)


@lru_cache(maxsize=None)
def solve(board: str) -> tuple[int, tuple[int, ...]]:
    """Minimax on a 9-character board: (value for the side to move, its optimal cells).

    value(b) = -1 if the previous mover has a line, 0 if the board is full, else
    max over free cells c of -value(b with the mover's mark at c); optimal cells attain the max.
    """
    mover = "x" if board.count("x") == board.count("o") else "o"
    if has_line(board, "o" if mover == "x" else "x", LINES):
        return -1, ()
    free = [i for i in range(9) if board[i] == "."]
    if not free:
        return 0, ()
    values = {i: -solve(board[:i] + mover + board[i + 1 :])[0] for i in free}
    best = max(values.values())
    return best, tuple(i for i in free if values[i] == best)


def optimal_moves(game: TicTacToe) -> list[str]:
    """The minimax-optimal actions in `game`'s position."""
    return [CELLS[i] for i in solve("".join(game.board))[1]]


@register_player("tictactoe", "minimax")
@register_player("tictactoe", "optimal")
class MinimaxPlayer(Player):
    """Uniformly random among all minimax-optimal moves (never loses)."""

    def policy(self, game: TicTacToe) -> dict[str, float]:
        return uniform(optimal_moves(game))
