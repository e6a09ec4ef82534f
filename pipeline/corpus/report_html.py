"""The page of `ssvd report`: report.json's numbers as tables, next to the PNG plots.

Rendered with jinja2 and autoescape on: every string from the corpus (split names, voices,
reasons, model names, the description) is HTML-escaped. Plots are linked by relative path, so
the report directory can be moved or served as it is.
"""
from __future__ import annotations

from typing import Any

import jinja2

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>ssvd report: {{ c.name }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0 1.4em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; }
.warn { background: #fff3cd; border: 1px solid #e0c060; padding: 0.6em 1em; }
</style></head><body>
<h1>Quality report: {{ c.name }}</h1>
<p>{{ c.description }}</p>
<p>state <b>{{ c.state }}</b> &middot; config_hash <code>{{ c.config_hash }}</code> &middot;
updated {{ c.updated }} &middot; report generated {{ d.generated }}</p>
{% if d.warnings %}<div class="warn"><b>Read with care:</b><ul>
{% for w in d.warnings %}<li>{{ w }}</li>{% endfor %}</ul></div>{% endif %}

<h2 id="splits">Splits</h2>
<table><tr><th class="l">split</th><th class="l">role</th><th class="l">kind</th><th>weight</th>
<th class="l">state</th><th>dialogues ok</th><th>rejected</th><th>failed</th><th>speech rows</th><th>audio h</th>
<th>token rows</th><th>training tokens</th></tr>
{% for s in d.splits %}{% set dl = s.stages.get('dialogues', {}).get('rows', {}) %}
<tr><td class="l">{{ s.name }}</td><td class="l">{{ s.role }}</td><td class="l">{{ s.kind }}</td>
<td>{{ s.weight if s.weight is not none else '' }}</td><td class="l">{{ s.state }}</td>
<td>{{ dl.get('ok', 0) }}</td><td>{{ dl.get('rejected', 0) }}</td><td>{{ dl.get('failed', 0) }}</td>
<td>{{ s.speech.durations.count }}</td><td>{{ '%.3f' % s.speech.durations.hours }}</td>
<td>{{ s.tokens.speech_rows + s.tokens.text_rows }}</td><td>{{ s.tokens.training_tokens }}</td></tr>
{% if s.missing_shards %}<tr><td class="l" colspan="12">missing shards: {{ s.missing_shards|join(', ') }}</td></tr>{% endif %}
{% endfor %}</table>

<h2 id="pairs">Pairs per dialogue</h2>
<img src="{{ d.plots.pairs_per_dialogue }}" alt="pairs per dialogue">
<table><tr><th class="l">split</th><th>dialogues</th><th>mean</th><th>median</th><th>max</th><th class="l">histogram (pairs: dialogues)</th></tr>
{% for s in d.splits if s.dialogues.ok %}<tr><td class="l">{{ s.name }}</td><td>{{ s.dialogues.ok }}</td>
<td>{{ s.dialogues.pairs.mean }}</td><td>{{ s.dialogues.pairs.median }}</td><td>{{ s.dialogues.pairs.max }}</td>
<td class="l">{% for k, v in s.dialogues.pairs_histogram.items() %}{{ k }}: {{ v }}{{ ', ' if not loop.last }}{% endfor %}</td></tr>
{% endfor %}</table>

<h2 id="words">Message length</h2>
<img src="{{ d.plots.message_words }}" alt="words per message">
<table><tr><th class="l">split</th><th>user msgs</th><th>user mean</th><th>user median</th><th>user max</th>
<th>assistant msgs</th><th>assistant mean</th><th>assistant median</th><th>assistant max</th></tr>
{% for s in d.splits if s.dialogues.ok %}<tr><td class="l">{{ s.name }}</td>
{% for role in ('user', 'assistant') %}{% set w = s.dialogues.words[role] %}<td>{{ w.count }}</td><td>{{ w.mean }}</td><td>{{ w.median }}</td><td>{{ w.max }}</td>{% endfor %}</tr>
{% endfor %}
<tr><th class="l">all</th>{% for role in ('user', 'assistant') %}{% set w = d.words[role] %}<th>{{ w.count }}</th><th>{{ w.mean }}</th><th>{{ w.median }}</th><th>{{ w.max }}</th>{% endfor %}</tr></table>

<h2 id="durations">Speech duration</h2>
<img src="{{ d.plots.speech_durations }}" alt="speech durations">
<table><tr><th class="l">split</th><th>dialogues</th><th>hours</th><th>mean s</th><th>min s</th><th>max s</th></tr>
{% for s in d.splits if s.speech.durations.count %}{% set u = s.speech.durations %}<tr><td class="l">{{ s.name }}</td>
<td>{{ u.count }}</td><td>{{ '%.3f' % u.hours }}</td><td>{{ u.mean_s }}</td><td>{{ u.min_s }}</td><td>{{ u.max_s }}</td></tr>
{% endfor %}</table>

<h2 id="rejections">Rejections</h2>
<img src="{{ d.plots.rejections }}" alt="rejections">
<table><tr><th class="l">split</th><th class="l">stage</th><th class="l">reason</th><th>stage stats</th><th>rejected rows in shards</th></tr>
{% for s in d.splits %}{% for r in s.rejections %}<tr><td class="l">{{ s.name }}</td><td class="l">{{ r.stage }}</td>
<td class="l">{{ r.reason }}</td><td>{{ r.stats }}</td><td>{{ r.rows }}</td></tr>{% endfor %}{% endfor %}</table>
<table><tr><th class="l">split</th><th class="l">stage</th><th class="l">state</th><th>ok</th><th>rejected</th><th>failed</th><th>input not ok</th><th>shards</th></tr>
{% for s in d.splits %}{% for name, st in s.stages.items() %}<tr><td class="l">{{ s.name }}</td><td class="l">{{ name }}</td>
<td class="l">{{ st.state }}</td><td>{{ st.rows.ok }}</td><td>{{ st.rows.rejected }}</td><td>{{ st.rows.failed }}</td>
<td>{{ st.stats.get('input_not_ok', 0) }}</td><td>{{ st.shards }}</td></tr>{% endfor %}{% endfor %}</table>

<h2 id="instructions">Instruction mix</h2>
<img src="{{ d.plots.instructions }}" alt="instruction mix">
<table><tr><th class="l">split</th><th class="l">instruction</th><th>pairs</th></tr>
{% for s in d.splits %}{% for k, v in s.dialogues.instructions.items() %}<tr><td class="l">{{ s.name }}</td>
<td class="l">{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}{% endfor %}</table>

<h2 id="voices">Voices</h2>
<img src="{{ d.plots.voices }}" alt="voices">
<table><tr><th class="l">split</th><th class="l">role</th><th class="l">voice</th><th>dialogues</th></tr>
{% for s in d.splits %}{% for role, c in s.speech.voices.items() %}{% for v, n in c.items() %}<tr><td class="l">{{ s.name }}</td>
<td class="l">{{ role }}</td><td class="l">{{ v }}</td><td>{{ n }}</td></tr>{% endfor %}{% endfor %}{% endfor %}</table>

<h2 id="tokens">Training tokens vs weights</h2>
<p>Training tokens: Mimi frames of a speech row, text tokens of a text row (the steps a trainer sees).</p>
<img src="{{ d.plots.token_shares }}" alt="token shares">
<table><tr><th class="l">split</th><th>training tokens</th><th>token share</th><th>weight</th><th>weight share</th></tr>
{% for r in d.mixture.splits %}<tr><td class="l">{{ r.split }}</td><td>{{ r.training_tokens }}</td>
<td>{{ '%.4f' % r.token_share }}</td><td>{{ '%.4g' % r.weight }}</td><td>{{ '%.4f' % r.weight_share }}</td></tr>{% endfor %}
<tr><th class="l">total</th><th>{{ d.mixture.total_training_tokens }}</th><th></th><th></th><th></th></tr></table>
</body></html>
"""

_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)


def render(data: dict[str, Any]) -> str:
    """The HTML page of report.json's content (`data`, with its "plots" file names)."""
    return _ENV.from_string(_TEMPLATE).render(d=data, c=data["corpus"])
