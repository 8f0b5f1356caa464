"""Device and fleet simulators: contract-conforming detectors, bad input, scenarios."""
