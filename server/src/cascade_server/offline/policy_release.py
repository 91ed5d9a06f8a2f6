"""A release that changes only the blending policy: the active release's models with
another policy file (`cascade policy publish`).

Apart from the training code on purpose: this runs beside serving servers, and
importing the training modules (LightGBM, SciPy, the model builders) took about 0.2 s
of the command's CPU.
"""

from __future__ import annotations

import os
import shutil

from cascade_server.artifacts.manifest import MANIFEST, Manifest, read_verified
from cascade_server.artifacts.registry import ReleaseRegistry
from cascade_server.blending.policy import POLICY_FILE, BlendingPolicies
from cascade_server.errors import CascadeError
from cascade_server.offline.build import Build, new_release_id


def publish_policy(
    registry: ReleaseRegistry, policies: BlendingPolicies, *, verify: bool = False
) -> Manifest:
    """A new active release: the active one's models with another blending policy file.

    The model files are hard links to the active release's (releases never change), so
    this takes a moment whatever the models' size; servers swap it in like any release.
    The new manifest carries the active one's checksums for them, so it never vouches for
    bytes nobody hashed: every server still hashes what it loads. The active release's
    files are checked for presence and size; ``verify`` hashes them too, to refuse at
    once over a release altered in place (at a million items, seconds of CPU beside
    the serving servers).
    """
    active = registry.active()
    if active is None:
        raise CascadeError(
            "there is no active release to change the policy of; run `cascade train all` "
            "(set CASCADE_POLICY_FILE to train with this policy)"
        )
    # One thread: servers are serving on this machine.
    verified = read_verified(registry.path_of(active), None if verify else (), threads=1)
    with registry.staging() as staging:
        shutil.copytree(registry.path_of(active), staging, copy_function=os.link)
        (staging / MANIFEST).unlink()
        (staging / POLICY_FILE).unlink(missing_ok=True)  # a link: never write through it
        (staging / POLICY_FILE).write_text(policies.text)
        # The model files are links to the active release's: its checksums stand for
        # them (hashing them twice more took 5 of 8 s at a million items); only the new
        # policy file is hashed.
        linked = {k: v for k, v in verified.artifacts.items() if k != POLICY_FILE}
        Build(staging).manifest(new_release_id(), known=linked)
        return registry.publish(staging, hashed={POLICY_FILE})
