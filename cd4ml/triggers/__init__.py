"""What starts a retrain, in one place (docs/loop.md has the table of every trigger).

- `drop`: a new object in the drop bucket becomes the next span (`cd4ml watch`, `cd4ml drop`);
- `drift`: the server's drift log and labelled feedback ask for a retrain (`cd4ml drift-retrain`);
- `cloud_function`: the drop trigger for one CloudEvent (cloud_function/main.py deploys it).

A push to the repository is the fourth trigger; it lives in .github/workflows/.
"""
