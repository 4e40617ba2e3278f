"""The supervised-ceiling benchmark's data: board symmetries, targets and the fast digit policy."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_supervised as bs  # noqa: E402


def _apply(perm, board: str) -> str:
    return "".join(board[perm[i]] for i in range(9))


def test_symmetries_are_the_eight_distinct_board_maps_and_keep_lines():
    assert len(set(bs.SYMMETRIES)) == 8
    lines = {frozenset(l) for l in [(0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8),
                                    (0, 4, 8), (2, 4, 6)]}
    for perm in bs.SYMMETRIES:
        assert {frozenset(perm[i] for i in line) for line in lines} == lines


def test_targets_move_with_the_board_under_every_symmetry():
    board = "x.o.x...."  # o to move; x threatens 0-4-8, o must take cell 8
    optimal = bs.make_targets([board], bs.Variant("t"))[0]
    assert optimal.nonzero().flatten().tolist() == [8]
    for perm in bs.SYMMETRIES:
        moved = bs.make_targets([_apply(perm, board)], bs.Variant("t"))[0]
        # new_board[i] = board[perm[i]]: the optimal cell c of the old board is i with perm[i] = c
        assert moved.nonzero().flatten().tolist() == [perm.index(8)]


def test_value_target_is_softmax_of_beta_times_child_values():
    board = "xx.oo...."  # x to move: 2 wins, 5 blocks (a draw), 6-8 let o win at 5
    v = bs.Variant("v", target="value", beta=2.0)
    q = bs.make_targets([board], v)[0]
    values = bs.child_values(board)
    assert values == {2: 1, 5: 0, 6: -1, 7: -1, 8: -1}
    expected = torch.softmax(torch.tensor([2.0 * values[c] for c in sorted(values)]), 0)
    torch.testing.assert_close(q[sorted(values)], expected)


def test_loss_is_minus_log_optimal_mass_by_hand():
    z = torch.tensor([[0.0, 1.0, 2.0] + [0.0] * 6])
    legal = torch.tensor([[True, True, True] + [False] * 6])
    target = torch.tensor([[0.0, 1.0, 1.0] + [0.0] * 6])
    p = torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0)
    got = bs.loss_fn(z, legal, target, bs.Variant("t"))
    torch.testing.assert_close(got, -torch.log(p[1] + p[2]))
