"""Cohort analysis: reader agreement, clinical-imaging concordance, site distribution, follow-up."""
