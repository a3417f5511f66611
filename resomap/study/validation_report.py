"""The validation's findings written out: the JSON summary and the short Markdown table, with
the targets each rate is held to.

Apart from the run (:mod:`resomap.study.validation`) so that the files' wording and keys change
in one place, never with the simulation.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from resomap.study import simulate
from resomap.study.validation_scoring import Validation

TARGETS = {"recovery": ("at least 90 %", lambda r: r >= 0.90),
           "wrong_claims": ("at most 5 %", lambda r: r <= 0.05),
           "coverage": ("93 % to 97 %", lambda r: 0.93 <= r <= 0.97)}


def summary(validation: Validation, planted: simulate.Planted, training: simulate.Training,
            machine: str, threads: int) -> dict[str, Any]:
    """The JSON written to results/validation/validation.json."""
    rates = validation.rates()
    reference = validation.reference
    return {
        "resolutions": validation.resolutions,
        "kept_contrast": {str(r): v for r, v in validation.kept.items()},
        "nyquist_cut_px": validation.nyquist_cut,
        "planted_answer": validation.planted,
        "reference_answer": reference.answer(validation.settings.margin),
        "reference": {
            "seeds": reference.seeds, "test_images": reference.test_images,
            "mean": {str(r): v for r, v in reference.means.items()},
            "standard_error": {str(r): v for r, v in reference.standard_errors.items()},
            "decision": {"best": reference.decision.best, "recommended": reference.decision.recommended,
                         "decided": reference.decision.decided,
                         "status": {str(r): v.status for r, v in reference.decision.verdicts.items()},
                         "statement": reference.decision.statement},
        },
        "rates": {name: rate.as_dict() for name, rate in rates.items()},
        "targets": {name: {"target": text, "met": bool(rates[name].total and ok(rates[name].value))}
                    for name, (text, ok) in TARGETS.items()},
        "settings": asdict(validation.settings),
        "design": asdict(validation.design),
        "planted": asdict(planted),
        "training": asdict(training),
        "seconds": validation.seconds,
        "machine": machine,
        "threads": threads,
        "studies": [{"study": o.study, "recommended": o.recommended, "best": o.best, "decided": o.decided,
                     "comparisons": [{"resolution": c.resolution, "status": c.status, "estimate": c.estimate,
                                      "low": c.low, "high": c.high, "truth": c.truth,
                                      "truly_within_margin": c.truly_within}
                                     for c in o.comparisons]}
                    for o in validation.outcomes],
    }


def markdown(validation: Validation, machine: str, threads: int, command: str) -> str:
    """A short table of the rates, the reference and how they were made."""
    rates = validation.rates()
    reference = validation.reference
    settings, design = validation.settings, validation.design
    lines = [
        "# Validation: a planted resolution effect",
        "",
        f"Command: `{command}`",
        "",
        f"{design.studies} studies, each {design.seeds} seeds per resolution at "
        f"{', '.join(f'{r} px' for r in validation.resolutions)}, {design.test_per_class} test images per "
        f"class; margin {settings.margin:g} ({settings.metric_label}), {settings.confidence:.0%} intervals, "
        f"{settings.n_resamples} resamples. Planted answer: {validation.planted} px (the texture is erased "
        f"below {validation.nyquist_cut:g} px); the reference's answer: "
        f"{reference.answer(settings.margin)} px.",
        "",
        "| Rate | Figure (95 % Wilson interval) | Target |",
        "|---|---|---|",
    ]
    for name, label in (("recovery", "Recovery (recommendation = planted answer)"),
                        ("wrong_claims", "Wrong confident claims (per comparison)"),
                        ("coverage", "Coverage of the 95 % intervals of the difference")):
        target, ok = TARGETS[name]
        met = "met" if rates[name].total and ok(rates[name].value) else "missed"
        lines.append(f"| {label} | {rates[name].text()} | {target}: {met} |")
    lines += [
        f"| Decided studies | {rates['decided'].text()} | |",
        f"| Wrongly shown worse (truly within the margin) | {rates['wrongly_inferior'].text()} | |",
        f"| Wrongly non-inferior (truly worse) | {rates['wrongly_non_inferior'].text()} | |",
        f"| Studies with any wrong claim | {rates['studies_with_a_wrong_claim'].text()} | |",
        f"| Coverage, truly within the margin | {rates['coverage_truly_within'].text()} | |",
        f"| Coverage, truly worse | {rates['coverage_truly_worse'].text()} | |",
        "",
        f"Reference ({reference.seeds} seeds, {reference.test_images} test images), balanced accuracy:",
        "",
        "| Resolution | Texture kept | Mean (standard error) | Reference verdict |",
        "|---|---|---|---|",
    ]
    for res in validation.resolutions:
        verdict = reference.decision.verdicts.get(res)
        lines.append(f"| {res} px | {validation.kept[res]:.1%} | {reference.means[res]:.3f} "
                     f"({reference.standard_errors[res]:.3f}) | {verdict.status if verdict else '-'} |")
    total = sum(validation.seconds.values())
    parts = ", ".join(f"{k} {v:.0f} s" for k, v in validation.seconds.items())
    plural = "s" if threads != 1 else ""
    lines += ["", f"Time: {total:.0f} s ({parts}) on {machine}, {threads} thread{plural}.", ""]
    return "\n".join(lines)
