"""The dashboard `rftlab serve` serves at Fireworks' paths (`/dashboard/...`): pages in `routes`, logins in
`sessions`, scripts, styles and the chart library in `static/` (nothing is fetched from elsewhere)."""
