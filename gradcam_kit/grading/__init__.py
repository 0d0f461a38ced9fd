"""The grading engine around the judge: reading submissions, the batch, reports and gradebook, the sample corpus."""
