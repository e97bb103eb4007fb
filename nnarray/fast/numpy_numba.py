"""The generic training step with its elementwise passes compiled by Numba, on NumPy: :class:`NumbaStep`.

The generic step's hidden layers make three passes over the batch-by-units array forward (the bias added to the
product, ReLU into a new array, the dropout mask) and three backward (the comparison H > 0, its cast to the
compute dtype, the product with the arriving gradient; then the dropout mask). Here each direction is one
compiled loop, in place on the fresh product (:class:`Ops`), with the same
operations in the same order, so the values are the generic step's bit for bit (tests/test_step.py). Everything
else — the products, the loss head, the optimizer — is the generic step's.

Used by default on NumPy when the ``numba`` extra is installed (:func:`nnarray.fused.numpy_engine`);
``fit(fast=False)`` or ``$NNARRAY_FAST=0`` runs the generic step. Arrays that are not C-contiguous or not of one
dtype take :mod:`nnarray.functions`' expressions.
"""

from __future__ import annotations

from .. import functions as F
from ..fused import numpy_engine
from ..step import TrainStep

__all__ = ["NumbaStep", "Ops"]


class Ops:
    """The ``ops`` of :meth:`nnarray.MLP.forward`/``backward``: :mod:`nnarray.functions`' ``bias_relu`` and
    ``hidden_backward`` as compiled loops, in place on the fresh product (made when the step is: the kernels
    need the ``numba`` extra); ``weight_gradient`` is the generic product."""

    def __init__(self):
        from .. import _numba_kernels as K  # noqa: PLC0415 -- the numba extra, checked by NumbaStep.unsupported

        self._kernels = {"bias_relu": K.bias_relu, "hidden_backward": K.relu_mask}

    weight_gradient = staticmethod(F.weight_gradient)

    def bias_relu(self, xp, Z, b, M=None):
        """:func:`nnarray.functions.bias_relu` in one pass over ``Z``."""
        return self._one_pass("bias_relu", xp, Z, b, M)

    def hidden_backward(self, xp, h, H, M=None):
        """:func:`nnarray.functions.hidden_backward` in one pass over ``h``."""
        return self._one_pass("hidden_backward", xp, h, H, M)

    @staticmethod
    def _views(arrays):
        """The NumPy arrays the loops run on: the arrays themselves here (the ops for another library's arrays give
        NumPy views of their memory, or None where one has none)."""
        return arrays

    def _one_pass(self, name, xp, out, other, M):
        """The compiled loop ``name`` in place on ``out`` when the arrays allow it (:meth:`_ran`), else
        :mod:`nnarray.functions`' expressions."""
        views = self._views((out, other) if M is None else (out, other, M))
        return out if views is not None and self._ran(name, *views) else getattr(F, name)(xp, out, other, M)

    def _ran(self, name, out, other, M=None):
        """Run the loop ``name`` on NumPy arrays that are all C-contiguous and of ``out``'s dtype (what the loops
        take): True, or False having done nothing."""
        arrays = (out, other) if M is None else (out, other, M)
        if not all(a.flags.c_contiguous and a.dtype == out.dtype for a in arrays):
            return False
        # Without dropout the loop gets ``out`` as a mask it never reads (masked=False).
        self._kernels[name](out, other, out if M is None else M, M is not None)
        return True


class NumbaStep(TrainStep):
    """:class:`~nnarray.step.TrainStep` with one compiled pass per hidden layer and direction."""

    name = "numpy-numba"
    description = "the generic step, each hidden layer's elementwise passes one compiled Numba loop (numba extra)"
    #: The ``ops`` the step makes (a subclass for another library's arrays gives its own).
    ops_class = Ops

    def __init__(self, net, opt, Xd, Td, reduction):
        super().__init__(net, opt, Xd, Td, reduction)
        self.ops = self.ops_class()

    @classmethod
    def unsupported(cls, net, opt, Xd, Td, batch_size=None, explicit=False):
        if numpy_engine() != "numba":
            return "the numba extra is not installed or NNARRAY_NUMBA=0 (pip install 'nnarray[numba]')"
        return None
