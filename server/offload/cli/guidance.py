"""The Claude Code skill `offload init` installs: when the agent should reach for the tools.

A skill, not a CLAUDE.md section: Claude Code loads only a skill's name and description until it
is relevant, so this costs the host a line of context per session, not the whole text.
"""

from __future__ import annotations

SKILL_NAME = "offload"

# One line in the frontmatter: Claude Code matches tasks against it (cap: 1,536 characters).
DESCRIPTION = (
    "Hand routine or bulky sub-work to cheaper Claude models through the offload MCP tools, and keep "
    "large files, logs and tool output out of your context. Use for reading or summarizing big "
    "files, trimming long JSON/CSV/log output, classifying/extracting/reformatting/drafting that "
    "fits in one prompt, and many similar items that can wait (half-price batches)."
)

SKILL_MD = f"""\
---
name: offload
description: {DESCRIPTION}
---

# Using offload

Pass file **paths**, not contents: the server reads them, so they never enter your context.

- **Big files or many files to understand** -> `summarize_context` with `paths` (and a `focus`).
- **Long JSON, CSV, logs or tool output** -> `trim_result` with `path` or `content`, plus
  `fields` / `query` for the part you need.
- **Routine work you can state in one prompt** (classify, extract, reformat, translate, draft,
  short answers) -> `routed_complete` with `task` and `difficulty`; put inputs in
  `context_files`. Check the answer; if it falls short, call again with `redo_of=<call_id>` to
  move one tier up instead of redoing it yourself.
- **Many similar items that can wait minutes** -> `batch_submit` (half price), then
  `batch_status` and `batch_results`.
- **Before a large job, or when cost comes up** -> `budget_status`.

Keep the work yourself when it needs this conversation's context, judgement across many steps,
or edits to files.
"""
