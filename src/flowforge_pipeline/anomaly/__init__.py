"""Measuring the anomaly flow against the generator's labeled injections."""
