"""Connect four: drop a piece into a column; `connect` in a row (any direction) wins.

Options: rows (6), cols (7), connect (4). x (seat 0) moves first. Actions are column numbers
"0".."cols-1". Compact board: rows top to bottom joined by "|", "." empty.
Players: random, heuristic (win now, else block the opponent's immediate win, else random),
negamax (alpha-beta to `depth` plies over a window-count evaluation, random among the best).
"""

from __future__ import annotations

from stlm_selfplay.envs.lines import LineGame, completes_line, line_table
from stlm_selfplay.envs.players import Player, uniform
from stlm_selfplay.envs.registry import register_game, register_player

MARKS = LineGame.marks


@register_game("connect_four")
class ConnectFour(LineGame):
    tag = "c4"
    title = "Connect four"
    _copied = ("board", "heights")

    def __init__(self, *, rows: int = 6, cols: int = 7, connect: int = 4, **base):
        """rows, cols: grid size (each 1..16); connect: pieces in a row that win (2..max(rows, cols))."""
        for key, value in (("rows", rows), ("cols", cols), ("connect", connect)):
            if not isinstance(value, int) or not 1 <= value <= 16:
                raise ValueError(f"{key} must be an integer in 1..16, got {value!r}")
        if not 2 <= connect <= max(rows, cols):
            raise ValueError(f"connect must be in 2..{max(rows, cols)} for a {rows}x{cols} grid, got {connect}")
        self.rows, self.cols, self.connect = rows, cols, connect
        self.lines, self.through = line_table(rows, cols, connect)
        self.columns = tuple(str(c) for c in range(cols))
        super().__init__(**base)

    def _new_state(self, deal) -> None:
        super()._new_state(deal)
        self.heights = [0] * self.cols

    def _legal(self) -> list[str]:
        return [self.columns[c] for c in range(self.cols) if self.heights[c] < self.rows]

    def drop_cell(self, col: int) -> int:
        """The cell a piece dropped into `col` lands on."""
        return (self.rows - 1 - self.heights[col]) * self.cols + col

    def _apply(self, action: str) -> None:
        col = int(action)
        self._place(self.drop_cell(col))
        self.heights[col] += 1

    def symmetries(self) -> list[tuple["ConnectFour", dict[str, str]]]:
        """The left-right mirror: column c -> cols - 1 - c."""
        image, last = self.clone(), self.cols - 1
        image.board = [self.board[r * self.cols + last - c] for r in range(self.rows) for c in range(self.cols)]
        image.heights = self.heights[::-1]
        mirror = {col: self.columns[last - c] for c, col in enumerate(self.columns)}
        image.history = [mirror.get(a, a) for a in self.history]
        image.refresh()
        return [(image, mirror)]

    def wins_with(self, col: int, mark: str) -> bool:
        """Whether dropping `mark` into `col` (not full) would complete a line."""
        cell = self.drop_cell(col)
        self.board[cell] = mark
        won = completes_line(self.board, cell, self.through)
        self.board[cell] = "."
        return won

    def describe(self, player: int) -> str:
        rows = "\n".join(self.grid_rows())
        return f"Drop a piece into a column 0-{self.cols - 1}; {self.connect} in a row wins. Board (top row first):\n{rows}"


@register_player("connect_four", "heuristic")
class HeuristicPlayer(Player):
    """Win now if possible, else block the opponent's immediate win, else a random column."""

    def policy(self, game: ConnectFour) -> dict[str, float]:
        legal = game.legal_actions()
        me, them = MARKS[game.current_player], MARKS[game.current_player ^ 1]
        for mark in (me, them):
            hits = [a for a in legal if game.wins_with(int(a), mark)]
            if hits:
                return uniform(hits)
        return uniform(legal)


@register_player("connect_four", "negamax")
class NegamaxPlayer(Player):
    """Alpha-beta negamax to `depth` plies; ties broken at random.

    Leaf score for the side to move: sum over lines of 4**k for lines holding k of its pieces and
    none of the opponent's, minus the same for the opponent; a win scores WIN + remaining depth
    (faster wins score higher).
    """

    WIN = 10**9

    def __init__(self, depth: int = 4):
        """depth: plies searched (1 = look one move ahead)."""
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive integer, got {depth!r}")
        self.depth = depth

    def scores(self, game: ConnectFour) -> dict[str, float]:
        """Negamax value of each legal action for the player to move."""
        work = game.clone()
        me = game.current_player
        return {a: -self._search(work, int(a), me, self.depth - 1, -self.WIN * 2, self.WIN * 2) for a in game.legal_actions()}

    def _search(self, g: ConnectFour, col: int, mover: int, depth: int, alpha: float, beta: float) -> float:
        """Value for the player *after* `mover` drops into `col` (from that next player's view)."""
        cell = g.drop_cell(col)
        g.board[cell] = MARKS[mover]
        g.heights[col] += 1
        try:
            if completes_line(g.board, cell, g.through):
                return -(self.WIN + depth)
            free = [c for c in range(g.cols) if g.heights[c] < g.rows]
            if not free:
                return 0.0
            if depth == 0:
                return _evaluate(g, MARKS[mover ^ 1])
            best = -self.WIN * 2
            for c in sorted(free, key=lambda c: abs(2 * c - g.cols + 1)):  # centre first: more cut-offs
                best = max(best, -self._search(g, c, mover ^ 1, depth - 1, -beta, -alpha))
                alpha = max(alpha, best)
                if alpha >= beta:
                    break
            return best
        finally:
            g.board[cell] = "."
            g.heights[col] -= 1

    def policy(self, game: ConnectFour) -> dict[str, float]:
        scores = self.scores(game)
        top = max(scores.values())
        return uniform([a for a, s in scores.items() if s == top])


def _evaluate(g: ConnectFour, mark: str) -> float:
    """Window-count evaluation for `mark` (see NegamaxPlayer)."""
    score = 0.0
    board = g.board
    for line in g.lines:
        mine = theirs = 0
        for i in line:
            c = board[i]
            if c == mark:
                mine += 1
            elif c != ".":
                theirs += 1
        if mine and not theirs:
            score += 4**mine
        elif theirs and not mine:
            score -= 4**theirs
    return score
