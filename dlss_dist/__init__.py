"""dlss_dist: deep-learned super sampling, distributed."""
