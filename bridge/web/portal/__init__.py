"""The data subject's own privacy page (issue 21), under /privacy: sign-in by an emailed link
or code, then what every CRM holds on the addresses proved, consent, corrections, downloads
and erasure."""
