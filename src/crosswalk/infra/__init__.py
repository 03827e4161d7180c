"""The comparison of the two workloads: profilers, the hardware catalog (data), the planner and the report.

``profile_train`` / ``profile_infer`` measure, ``planner`` sizes (pure formulas), ``validate`` checks the
planner against held-out measurements, ``report`` writes one HTML page; ``demo.run_infra_demo`` does all
four into an outputs folder.
"""
