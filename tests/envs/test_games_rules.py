"""Rules of the native games: known counts, line directions, nim theory, Kuhn payoffs, options."""

from __future__ import annotations

import itertools

import pytest

from stlm_selfplay.envs import from_history, make, make_player
from stlm_selfplay.envs.connect_four import ConnectFour
from stlm_selfplay.envs.evaluation import kuhn_terminals, tictactoe_positions
from stlm_selfplay.envs.kuhn_poker import KuhnPoker
from stlm_selfplay.envs.lines import line_table
from stlm_selfplay.envs.nim import Nim, mover_wins
from stlm_selfplay.envs.simple_negotiation import SimpleNegotiation
from stlm_selfplay.envs.tictactoe import TicTacToe, solve
from stlm_selfplay.errors import UserError


# -- tic-tac-toe ------------------------------------------------------------------------------
def test_tictactoe_minimax_value_of_empty_board_is_a_draw():
    value, moves = solve("." * 9)
    assert value == 0
    assert moves == tuple(range(9))  # every first move draws with best play


def test_tictactoe_counts_games_and_positions():
    """255,168 complete games (131,184 x wins, 77,904 o wins, 46,080 draws); 5,478 positions."""
    memo: dict = {}

    def count(game):  # (x wins, o wins, draws) over all continuations, memoised by position
        key = game.state_key()
        if key not in memo:
            if game.done:
                memo[key] = {(1.0, -1.0): (1, 0, 0), (-1.0, 1.0): (0, 1, 0), (0.0, 0.0): (0, 0, 1)}[game.rewards]
            else:
                totals = [0, 0, 0]
                for action in game.legal_actions():
                    child = game.clone()
                    child.step(action)
                    totals = [a + b for a, b in zip(totals, count(child))]
                memo[key] = tuple(totals)
        return memo[key]

    x_wins, o_wins, draws = count(TicTacToe.from_history([]))
    assert (x_wins, o_wins, draws) == (131_184, 77_904, 46_080)
    assert x_wins + o_wins + draws == 255_168
    assert len(memo) == 5_478
    assert sum(1 for key in memo if not key[1]) == 4_520 == len(tictactoe_positions())


def test_tictactoe_win_draw_and_turn_limit():
    game = TicTacToe.from_history(["0", "3", "1", "4"])
    assert not game.done and game.current_player == 0
    result = game.step("2")
    assert result.done and game.rewards == (1.0, -1.0) and game.outcome == ("win", "loss")
    draw = TicTacToe.from_history(list("012435768"))  # x o x / x o o / o x x: no line
    assert draw.done and draw.rewards == (0.0, 0.0)
    short = make("tictactoe", max_turns=3)
    for action in ("0", "1", "2"):
        short.step(action)
    assert short.done and short.outcome == ("draw", "draw")


def test_state_key_merges_transpositions_and_clone_is_independent():
    a = TicTacToe.from_history(["0", "4", "8"])
    b = TicTacToe.from_history(["8", "4", "0"])
    assert a.state_key() == b.state_key()
    copy = a.clone()
    copy.step("1")
    assert a.board[1] == "." and a.turn == 3 and copy.turn == 4 and a.history == ["0", "4", "8"]


# -- connect four -----------------------------------------------------------------------------
def test_line_tables_have_the_known_sizes():
    assert len(line_table(3, 3, 3)[0]) == 8
    assert len(line_table(6, 7, 4)[0]) == 69  # 24 horizontal, 21 vertical, 12 + 12 diagonal


def _position(rows: list[str]) -> ConnectFour:
    """A 6x7 board from text, top row first; x to move."""
    game = make("connect_four")
    game.board = list("".join(rows))
    game.heights = [sum(row[c] != "." for row in rows) for c in range(7)]
    game.current_player = 0
    game.refresh()
    return game


@pytest.mark.parametrize(
    "rows, column",
    [
        ([".......", ".......", ".......", ".......", ".......", "xxx..oo"], "3"),  # horizontal, end
        ([".......", ".......", ".......", ".......", "o......", "xx.xoo."], "2"),  # horizontal, middle
        ([".......", ".......", ".......", "x......", "xo.....", "xo....o"], "0"),  # vertical
        ([".......", ".......", ".......", "..xo...", ".xoo...", "xoox..."], "3"),  # diagonal /
        ([".......", ".......", ".......", "ox.....", "xox....", "oxox..."], "0"),  # diagonal \
    ],
)
def test_connect_four_detects_each_direction(rows, column):
    game = _position(rows)
    result = game.step(column)
    assert result.done and game.rewards == (1.0, -1.0)
    blocked = _position(rows)
    blocked.current_player = 1  # the same drop by o completes nothing
    blocked.refresh()
    assert not blocked.step(column).done


def test_connect_four_full_column_is_illegal_and_options_apply():
    game = make("connect_four", rows=2, cols=3, connect=2)
    for action in ("0", "1"):
        game.step(action)
    assert game.legal_actions() == ["0", "1", "2"]
    game = make("connect_four", rows=2, cols=3, connect=3)
    game.step("0"), game.step("0")
    assert game.legal_actions() == ["1", "2"]
    assert game.step("0").rule == "lose" and game.rewards == (-1.0, 1.0)  # x offended


def test_connect_four_bots_take_and_block_immediate_wins():
    game = _position([".......", ".......", ".......", ".......", "ooo....", "xxx...."])
    assert make_player("connect_four", "heuristic").policy(game) == {"3": 1.0}
    assert make_player("connect_four", "negamax", depth=2).policy(game) == {"3": 1.0}
    game.board[35:38] = [".", ".", "."]  # x has no line: must block o's row at column 3
    game.heights[0:3] = [1, 1, 1]
    game.board[28:31], game.board[35:38] = ["."] * 3, ["o", "o", "o"]
    game.refresh()
    assert make_player("connect_four", "heuristic").policy(game) == {"3": 1.0}
    assert make_player("connect_four", "negamax", depth=3).policy(game) == {"3": 1.0}


# -- nim --------------------------------------------------------------------------------------
def _brute_force_mover_wins(game, memo) -> bool:
    key = game.state_key()
    if key not in memo:
        wins = False
        for action in game.legal_actions():
            child = game.clone()
            child.step(action)
            if child.done:
                wins = child.rewards[game.current_player] > 0
            else:
                wins = not _brute_force_mover_wins(child, memo)
            if wins:
                break
        memo[key] = wins
    return memo[key]


def _optimal_never_loses(game, me, bot) -> bool:
    """Every line where `me` plays any move `bot` may choose, against every reply, ends in a win."""
    if game.done:
        return game.rewards[me] > 0
    moves = [a for a, p in bot.policy(game).items() if p > 0] if game.current_player == me else game.legal_actions()
    for action in moves:
        child = game.clone()
        child.step(action)
        if not _optimal_never_loses(child, me, bot):
            return False
    return True


@pytest.mark.parametrize("misere", [False, True])
def test_nim_sum_strategy_is_exact_on_small_piles(misere):
    bot = make_player("nim", "optimal")
    memo: dict = {}
    starts = list(itertools.product(range(1, 4), repeat=3)) + list(itertools.product(range(1, 6), repeat=2))
    winning = 0
    for piles in starts:
        game = Nim.from_history([], piles=piles, misere=misere)
        brute = _brute_force_mover_wins(game, memo)
        assert mover_wins(piles, misere) == brute, piles
        if brute:
            winning += 1
            assert _optimal_never_loses(game, 0, bot), piles
    assert winning > 0


def test_nim_last_taker_wins_or_loses():
    assert Nim.from_history(["0:1"], piles=(1,)).rewards == (1.0, -1.0)
    assert Nim.from_history(["0:1"], piles=(1,), misere=True).rewards == (-1.0, 1.0)
    assert make("nim", piles=(2, 1)).legal_actions() == ["0:1", "0:2", "1:1"]


# -- Kuhn poker -------------------------------------------------------------------------------
def test_kuhn_payoffs_in_all_30_terminal_histories():
    terminals = kuhn_terminals()
    assert len(terminals) == 30
    sequences = {("check", "check"), ("bet", "call"), ("bet", "fold"), ("check", "bet", "call"), ("check", "bet", "fold")}
    for deal in itertools.permutations(range(3), 2):
        mine = [t for t in terminals if t.deal == deal]
        assert {tuple(a for _, _, a in t.path) for t in mine} == sequences
        sign = 1 if deal[0] > deal[1] else -1
        expected = {
            ("check", "check"): sign * 1, ("bet", "call"): sign * 2, ("check", "bet", "call"): sign * 2,
            ("bet", "fold"): 1, ("check", "bet", "fold"): -1,
        }
        for t in mine:
            assert t.payoff0 == expected[tuple(a for _, _, a in t.path)]
            game = KuhnPoker.from_history([a for _, _, a in t.path], deal=(deal,))
            assert game.done and game.rewards == (t.payoff0, -t.payoff0)
    first = next(t for t in terminals if t.deal == (2, 0) and len(t.path) == 3)
    assert [s for _, s, _ in first.path] == ["K", "Jp", "Kpb"]  # information-state keys


def test_kuhn_multi_round_alternates_first_actor_and_sums_chips():
    game = KuhnPoker.from_history(["bet", "call", "check"], deal=((2, 0), (0, 1)), rounds=2)
    assert game.chips == [2.0, -2.0] and game.current_player == 0  # seat 1 opened hand 2
    assert game.hand_actions == ["check"]
    game.step("bet")
    game.step("call")  # seat 0 bets with J, seat 1 calls with Q and wins 2 back
    assert game.done and game.rewards == (0.0, 0.0)
    assert make("kuhn_poker", rounds=2, seed=1).board_text(0).endswith("h1/2 +0")


def test_kuhn_forfeit_costs_the_full_stake():
    game = make("kuhn_poker", rounds=3, seed=0)
    assert game.step("raise").rule == "lose" and game.rewards == (-6.0, 6.0)  # seat 0 opens hand 1


# -- simple negotiation -----------------------------------------------------------------------
def test_negotiation_trade_and_zero_sum_scoring():
    deal = (((3, 1, 2), (5, 2, 8)), ((4, 4, 4), (4, 2, 8)))
    start = SimpleNegotiation.from_history([], deal=deal, turns=4)
    assert "2b:1c" not in start.legal_actions() and "1b:1c" in start.legal_actions()  # seat 0 holds 1 b
    assert "accept" not in start.legal_actions()  # no offer yet
    game = SimpleNegotiation.from_history(["1b:1c", "accept", "pass", "pass"], deal=deal, turns=4)
    # seat 0 gives 1 b (worth 2 to it) for 1 c (worth 8): +6; seat 1 gives c (8) for b (2): -6
    assert game.inventory == [[3, 0, 3], [4, 5, 3]]
    assert (game.gain(0), game.gain(1)) == (6, -6)
    assert game.done and game.rewards == (1.0, -1.0)


def test_negotiation_heuristic_accepts_only_good_offers():
    deal = (((3, 1, 2), (5, 2, 8)), ((4, 4, 4), (4, 2, 8)))
    bot = make_player("simple_negotiation", "heuristic")
    good = SimpleNegotiation.from_history(["1c:1b"], deal=deal)  # seat 1 receives c (8) for b (2)
    assert bot.policy(good) == {"accept": 1.0}
    bad = SimpleNegotiation.from_history(["1b:1c"], deal=deal)  # seat 1 would give c (8) for b (2)
    assert "accept" not in bot.policy(bad)
    assert bot.policy(SimpleNegotiation.from_history([], deal=deal)) == {"1b:1c": 1.0}


# -- illegal-action rules and options ---------------------------------------------------------
def test_illegal_rule_lose_retry_random():
    game = make("tictactoe", illegal="lose")
    game.step("4")
    result = game.step("[4]")  # occupied
    assert (result.legal, result.rule, result.done, game.rewards) == (False, "lose", True, (1.0, -1.0))

    game = make("tictactoe", illegal="retry:2")
    for attempt in range(2):
        result = game.step("zz")
        assert (result.rule, result.done, game.current_player) == ("retry", False, 0)
        assert game.observation().endswith(" !zz>")
    assert game.step("[4]").rule == "ok" and game.feedback is None
    game.step("x"), game.step("x")
    assert game.step("x").rule == "lose" and game.rewards == (1.0, -1.0)

    game = make("tictactoe", illegal="random", seed=3)
    result = game.step(b"\xff")
    assert result.rule == "random" and not result.legal and result.applied in [str(i) for i in range(9)]
    assert game.turn == 1 and game.current_player == 1 and game.illegal_counts == [1, 0]


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="valid options"):
        make("tictactoe", size=4)
    with pytest.raises(UserError, match="rows"):
        make("connect_four", rows=0)
    with pytest.raises(UserError, match="piles"):
        make("nim", piles=[])
    with pytest.raises(UserError, match="retry:N"):
        make("nim", illegal="retry:x")
    with pytest.raises(UserError, match="did you mean 'tictactoe'"):
        make("tictactoe2")
    with pytest.raises(UserError, match="valid: heuristic, negamax, random"):
        make_player("connect_four", "optimal")
    with pytest.raises(UserError, match="alpha"):
        make_player("kuhn_poker", "nash:alpha=0.5")
    assert make_player("connect_four", "negamax:depth=2").depth == 2
    with pytest.raises(ValueError, match="illegal action"):
        TicTacToe.from_history(["4", "4"])
    with pytest.raises(UserError, match="unknown game"):
        from_history("tictac", [])


def test_from_history_by_name_with_a_deal():
    game = from_history("kuhn_poker", ["check", "bet"], deal=((0, 2),))
    assert game.info_state(0) == "Jpb" and game.legal_actions() == ["call", "fold"]
    game.step("fold")
    assert game.rewards == (-1.0, 1.0)
