"""agents/run/torchstart.py: no TorchDynamo import in a process that never compiles, and torch.compile still
works after the placeholder (each case in a fresh interpreter: the placeholder is per process)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import ROOT


def _run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_an_optimiser_builds_steps_and_saves_without_importing_dynamo():
    out = _run("""
        import sys, torch
        from agents.run.torchstart import start_torch
        start_torch(1)
        assert torch.get_num_threads() == 1
        net = torch.nn.Linear(3, 2)
        opt = torch.optim.Adam(net.parameters(), lr=0.1)
        before = net.weight.detach().clone()
        for _ in range(3):
            opt.zero_grad()
            net(torch.ones(4, 3)).pow(2).sum().backward()
            opt.step()
        opt.load_state_dict(opt.state_dict())
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))]})
        assert not torch.equal(before, net.weight)
        print(type(sys.modules["torch._dynamo"]).__name__)
    """)
    assert out.split() == ["_Placeholder"]


def test_scans_of_sys_modules_leave_the_placeholder_and_a_submodule_import_gets_the_real_module():
    """inspect.getmodule asks every module for __file__, here in the middle of torch.distributed's own
    import (it failed as a circular import when that imported the real module)."""
    out = _run("""
        import inspect, sys, torch
        from agents.run.torchstart import start_torch
        start_torch(1)
        import torch.distributed.tensor
        inspect.getmodule(start_torch)
        print(type(sys.modules["torch._dynamo"]).__name__)
        import torch._dynamo.utils
        print(type(sys.modules["torch._dynamo"]).__name__, torch._dynamo.utils.__name__)
    """)
    assert out.split() == ["_Placeholder", "module", "torch._dynamo.utils"]


def test_torch_compile_after_the_placeholder_imports_the_real_module_and_optimisers_go_on():
    out = _run("""
        import sys, torch
        from agents.run.torchstart import start_torch
        start_torch(1)
        net = torch.nn.Linear(3, 2)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        net(torch.ones(1, 3)).sum().backward()
        opt.step()                                   # through the placeholder
        f = torch.compile(lambda x: torch.sin(x) * 2, backend="eager")
        assert torch.allclose(f(torch.ones(2)), torch.sin(torch.ones(2)) * 2)
        real = sys.modules["torch._dynamo"]
        assert type(real).__name__ == "module" and torch._dynamo is real
        opt.zero_grad()
        net(torch.ones(1, 3)).sum().backward()
        opt.step()                                   # through the real module now
        opt2 = torch.optim.Adam(net.parameters())    # add_param_group through the real disable
        print(real.__name__, len(opt2.param_groups))
    """)
    assert out.split() == ["torch._dynamo", "1"]
