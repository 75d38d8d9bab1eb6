"""`tillmesh demo`: a fleet of real till and HQ processes (`fleet`), a workload through
their HTTP API (`workload`, reached through `access`) recorded in a model (`model`), the
story of faults (`story`) and the checks that every acknowledged sale converged
(`checks`). `lan` tells the story on emulated machines (`demo --lan`), on the emulated
network of `netlab`."""
