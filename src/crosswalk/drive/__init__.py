"""The vehicle loop: a simulated car sees a pedestrian step onto the road, with real inference latency, and brakes.

``scenario`` builds the world, ``sim`` runs the loop in simulated time (``perception`` turns boxes into tracked
ground positions, ``policy`` decides, ``physics`` brakes), ``sweep`` drives scenarios x speeds and finds the
maximum safe latency, ``plots`` draws, ``demo`` is the ``make demo`` step. Entry points: ``sweep.run_drive``,
``sweep.drive_sweep``, ``demo.demo_drive``. Nothing heavy is imported here (the CLI imports this package).
"""
