"""deqlib.memory: argument checks (the measurements are tested with the solvers)."""

import pytest
import torch

from deqlib import memory


def test_a_function_that_is_not_callable_is_named():
    for measure in (memory.saved_tensor_bytes, memory.cuda_peak_bytes):
        with pytest.raises(TypeError, match=r"fn must be callable as fn\(\) with no arguments"):
            measure(torch.ones(3))        # a tensor where a function is meant


def test_saved_tensor_bytes_counts_what_a_product_keeps():
    x = torch.ones(100, requires_grad=True)
    assert memory.saved_tensor_bytes(lambda: (x * x).sum()) == 400


def test_saved_tensors_lists_each_storage_once_and_sums_to_the_bytes():
    x, w = torch.ones(100, requires_grad=True), torch.ones(3, 4, requires_grad=True)
    fn = lambda: (x * x).sum() + (torch.ones(2, 3) @ w).sum()   # keeps x once, the 2 x 3 input
    listed = memory.saved_tensors(fn)
    assert listed == [((100,), 400), ((2, 3), 24)]
    assert sum(nbytes for _, nbytes in listed) == memory.saved_tensor_bytes(fn)
