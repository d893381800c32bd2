"""An SPDX 2.3 (JSON) software bill of materials of an image's Debian packages."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from framework.builder.lockfile import LockedPackage


def _spdx_id(name: str) -> str:
    return "SPDXRef-Package-deb-" + "".join(c if c.isalnum() or c in ".-" else "-" for c in name)


def spdx(image_ref: str, digest: str, created: str, packages: list[LockedPackage]
         ) -> dict[str, Any]:
    root = "SPDXRef-Image"
    entries: list[dict[str, Any]] = [{
        "SPDXID": root,
        "name": image_ref,
        "versionInfo": digest,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": False,
        "primaryPackagePurpose": "CONTAINER",
        "checksums": [{"algorithm": "SHA256", "checksumValue": digest.split(":", 1)[1]}],
    }]
    relations = [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
                  "relatedSpdxElement": root}]
    for p in sorted(packages, key=lambda p: p.name):
        purl = f"pkg:deb/debian/{p.name}@{quote(p.version, safe='')}?arch={p.architecture}"
        entries.append({
            "SPDXID": _spdx_id(p.name),
            "name": p.name,
            "versionInfo": p.version,
            "downloadLocation": p.url,
            "filesAnalyzed": False,
            "supplier": "Organization: Debian",
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "checksums": [{"algorithm": "SHA256", "checksumValue": p.sha256}],
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                              "referenceLocator": purl}],
        })
        relations.append({"spdxElementId": root, "relationshipType": "CONTAINS",
                          "relatedSpdxElement": _spdx_id(p.name)})
        relations += [{"spdxElementId": _spdx_id(p.name), "relationshipType": "DEPENDS_ON",
                       "relatedSpdxElement": _spdx_id(dep)} for dep in p.depends]
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": image_ref,
        "documentNamespace": f"https://cimages.invalid/spdx/{quote(image_ref)}/{digest}",
        "creationInfo": {"created": created, "creators": ["Tool: cimages"]},
        "packages": entries,
        "relationships": relations,
    }
