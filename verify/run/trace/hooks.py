"""Recording: forward hooks on one policy model that hand every chosen output to a sink, in execution order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from verify_ate.verify.errors import InputError
from verify_ate.verify.run.trace.config import X_T_LABEL, X_T_PATH, TraceConfig, select_modules
from verify_ate.verify.upstream.pi0_modules import (
    ACTION_IN_PROJECTION,
    ACTION_OUT_PROJECTION,
    euler_step,
)

# sink(path, call, label, phase, tensor): one recorded output
Sink = Callable[[str, int, str, str, Any], None]


def first_tensor(output: Any) -> Any:
    """The tensor a module produced: itself, the first of a tuple/list, or a ModelOutput's first field."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            found = first_tensor(item)
            if found is not None:
                return found
        return None
    values = getattr(output, "values", None)
    if callable(values):  # transformers ModelOutput (an OrderedDict): last_hidden_state first
        for item in values():
            found = first_tensor(item)
            if found is not None:
                return found
    return None


class ModuleRecorder:
    """Hooks on one policy's model (`adapter.traced_model`, PI0Pytorch for pi0); `sink` gets each recorded output,
    sliced to batch row `row`.

    The step counter: a pre-hook on the adapter's step module, which runs first in every denoising step (pi0's
    state projection, Diffusion's U-Net); what runs before is phase "prefix", then "step 0", "step 1"... (a policy
    of one forward pass records everything as "prefix"). pi0 only: x_t after each step is recorded from the
    action-in projection's input (x_t) and the action-out projection's output (v_t). The modules: pi0's from the
    trace configuration, another policy's from configs/trace.yaml `policies` or else its adapter's defaults.
    """

    def __init__(self, model: Any, config: TraceConfig, batch_size: int, row: int, sink: Sink, adapter: Any = None):
        from verify_ate.verify.model.policies import adapter_for

        self.adapter = adapter if adapter is not None else adapter_for("pi0")
        self.model = model
        self.config = config
        self.batch_size = batch_size
        self.row = row
        self.sink = sink
        self.step = -1  # -1: prefix pass; k: Euler step k
        self.calls: dict[str, int] = {}
        self._x_in: Any = None
        self._handles: list[Any] = []
        self.num_steps = int(model.config.num_inference_steps) if self.adapter.records_x_t else 0

    @property
    def phase(self) -> str:
        if not self.adapter.step_module:
            return "forward"  # one forward pass
        return "prefix" if self.step < 0 else f"step {self.step}"

    def _row(self, tensor: Any) -> Any:
        tensor = tensor.detach()
        if tensor.dim() >= 1 and tensor.shape[0] == self.batch_size:
            return tensor[self.row : self.row + 1]
        return tensor

    def _emit(self, path: str, label: str, tensor: Any) -> None:
        call = self.calls.get(path, 0)
        self.calls[path] = call + 1
        self.sink(path, call, label, self.phase, self._row(tensor))

    def __enter__(self) -> ModuleRecorder:
        modules = dict(self.model.named_modules())
        needed = (ACTION_IN_PROJECTION, ACTION_OUT_PROJECTION) if self.adapter.records_x_t else ()
        for name in (*needed, *([self.adapter.step_module] if self.adapter.step_module else [])):
            if name not in modules:
                raise InputError(f"this policy has no {name!r} module; not lerobot 0.6.1's {self.adapter.label}")

        def count_step(_module: Any, _args: Any) -> None:
            self.step += 1

        if self.adapter.step_module:
            self._handles.append(modules[self.adapter.step_module].register_forward_pre_hook(count_step))
        rules, source = self.config.rules_for(self.adapter, self.model)
        # Registered in selection order, so they fire in it; the x_t hook is registered last.
        for path, label, module in select_modules(self.model, rules, source):

            def record(_module: Any, _args: Any, output: Any, path: str = path, label: str = label) -> None:
                tensor = first_tensor(output)
                if tensor is not None:
                    self._emit(path, label, tensor)

            self._handles.append(module.register_forward_hook(record))
        if self.config.record_x_t and self.adapter.records_x_t:

            def keep_x_in(_module: Any, args: Any) -> None:
                self._x_in = args[0]

            def record_x_t(_module: Any, _args: Any, v_t: Any) -> None:
                if self._x_in is not None:
                    self._emit(X_T_PATH, X_T_LABEL, euler_step(self._x_in, v_t, self.num_steps))
                    self._x_in = None

            self._handles.append(modules[ACTION_IN_PROJECTION].register_forward_pre_hook(keep_x_in))
            self._handles.append(modules[ACTION_OUT_PROJECTION].register_forward_hook(record_x_t))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
