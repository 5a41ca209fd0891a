"""Issue 18, smaller findings: a level's progress bar ends full when diversity steps create items."""

from __future__ import annotations

import asyncio
import json

from conftest import make_settings
from fakes import ScriptedChatModel
from run_report.progress import ProgressDisplay


def test_level_bar_reaches_its_total_when_the_breadth_step_creates_items(tmp_path):
    from graph.workflow import build_graph
    from resources import RunResources
    from run import prepare_directory

    settings = make_settings(tmp_path, max_steps=0, loop=2, diversity=["breadth"], breadth_ratio=1.0)
    prepare_directory(settings, overwrite=False)
    model = ScriptedChatModel()
    resources = RunResources.build(settings, models={"evol": model, "optim": model})
    config = {"configurable": {"thread_id": "t", "resources": resources}, "recursion_limit": 500}
    display = ProgressDisplay(settings.max_steps, enabled=False)

    async def stream():
        async for chunk in build_graph().astream({}, config, stream_mode=["updates", "custom"], subgraphs=True):
            display.handle(chunk)

    asyncio.run(stream())
    counts = json.loads((tmp_path / "out" / "run.json").read_text(encoding="utf-8"))["counts"]["levels"]
    for level in ("1", "2"):
        bar = display.bars[f"level:{level}"]
        assert counts[level]["added"] > 0  # the case at hand: the step created items at this level
        assert bar.n == bar.total == counts[level]["parents"] + counts[level]["added"]
