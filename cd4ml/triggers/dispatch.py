"""Ask GitHub to retrain: the `repository_dispatch` that `.github/workflows/retrain.yml` listens for.

On a cluster the drift trigger (a CronJob, k8s/base/drift-retrain-cronjob.yaml) need not hold
cluster credentials for Kubeflow: it harvests the labelled traffic into the gs:// data root and
sends `drift-detected` with the harvested span, and the workflow compiles and submits the run
from the commit under review, as every other retrain does.

    POST {api}/repos/{owner}/{repo}/dispatches
    {"event_type": "drift-detected", "client_payload": {"span": "3", "reason": "..."}}

The token comes from CD4ML_GITHUB_TOKEN (a fine-grained token with "Contents: write" on the
repository, from a Kubernetes Secret); it is never printed, logged or recorded. The API address is
CD4ML_GITHUB_API (default https://api.github.com; the tests point it at a local stand-in).
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Dict, Optional

EVENT_TYPES = {"drift": "drift-detected", "drop": "data-dropped"}
REPOSITORY = re.compile(r"^[A-Za-z0-9-]{1,39}/[A-Za-z0-9._-]{1,100}$")
DEFAULT_API = "https://api.github.com"


class DispatchError(RuntimeError):
    pass


@dataclasses.dataclass
class GitHubDispatch:
    repository: str
    token: str = dataclasses.field(repr=False)
    api: str = DEFAULT_API
    timeout: float = 10.0

    def __post_init__(self):
        if not REPOSITORY.match(self.repository):
            raise ValueError(f"CD4ML_GITHUB_REPOSITORY={self.repository!r}: expected OWNER/REPO")
        if not self.token:
            raise ValueError("CD4ML_GITHUB_TOKEN is empty: a repository_dispatch needs a token")

    @classmethod
    def from_env(cls, repository: Optional[str] = None) -> Optional["GitHubDispatch"]:
        """The dispatcher CD4ML_GITHUB_REPOSITORY (or `repository`) asks for; None when unset."""
        repository = repository or os.environ.get("CD4ML_GITHUB_REPOSITORY", "")
        if not repository:
            return None
        return cls(repository, os.environ.get("CD4ML_GITHUB_TOKEN", ""),
                   os.environ.get("CD4ML_GITHUB_API", "") or DEFAULT_API)

    def send(self, trigger: str, payload: Dict[str, object]) -> str:
        """Send the dispatch; a line saying what was sent. DispatchError names GitHub's answer."""
        import requests

        body = {"event_type": EVENT_TYPES[trigger],
                "client_payload": {k: str(v) for k, v in payload.items() if v not in (None, "")}}
        url = f"{self.api.rstrip('/')}/repos/{self.repository}/dispatches"
        try:
            answer = requests.post(url, json=body, timeout=self.timeout, headers={
                "Authorization": f"Bearer {self.token}", "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28"})
        except requests.RequestException as exc:
            raise DispatchError(f"repository_dispatch to {url} failed: {type(exc).__name__}") from None
        if answer.status_code != 204:
            raise DispatchError(f"repository_dispatch to {url}: GitHub answered {answer.status_code} "
                                f"{answer.text[:200]!r} (expected 204; check the token's access to "
                                f"{self.repository})")
        return f"sent {body['event_type']} to {self.repository} ({', '.join(sorted(body['client_payload']))})"
