"""Operation, bandwidth, latency and energy estimates of a deployed graph (docs/design.md §6).

`analyze(graph)` reads populations, projections and real fan-out maps once (plan.py);
`Estimator` accumulates spike statistics over a dataset (estimator.py); chip figures come from
data files with sources (snncc/profile.py, snncc/profiles/*.json); `Report.table()` / `to_markdown()` print,
`estimator.write_json` writes the whole report; `lowering_cost.py` prices fan-in vs relay and
spike-product orders for `snncc.passes.residual_lowering`.
"""

from snncc.estimate.estimator import Estimator, LinkStats, PopulationStats, Report, estimate
from snncc.estimate.plan import Plan, Population, ProductNode, Projection, analyze, coincidences
from snncc.profile import Figure, Profile, available_profiles, load_profile

__all__ = ["Estimator", "Report", "PopulationStats", "LinkStats", "estimate", "analyze", "Plan", "Population",
           "Projection", "ProductNode", "coincidences", "load_profile", "Profile", "Figure", "available_profiles"]
