"""`tillmesh demo`: a fleet of real till and HQ processes (`fleet`), a workload through
their HTTP API (`workload`) recorded in a model (`model`), the story of faults
(`story`) and the checks that every acknowledged sale converged (`checks`)."""
