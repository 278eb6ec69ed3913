"""idbridge as a SAML IdP (issue 16), the application's end through the official WorkOS Python
SDK: a second idbridge (B, IDBRIDGE_URL) has a SAML connection created from the first idbridge's
(A's) IdP metadata URL; tests/tests/idp_e2e.rs drives the login at A (directory mode against
slapd), posts A's signed assertion to B's ACS and hands the code here. `get_profile_and_token`
must return the directory user A asserted: email, names, idp_id and groups.
"""

from __future__ import annotations

import json
import os

import pytest
from workos import WorkOSClient

BASE_URL = os.environ["IDBRIDGE_URL"]
API_KEY = os.environ["IDBRIDGE_API_KEY"]
CLIENT_ID = os.environ["IDBRIDGE_CLIENT_ID"]
CODE = os.environ["IDBRIDGE_IDP_CODE"]
EXPECT = json.loads(os.environ["IDBRIDGE_IDP_EXPECT"])


def test_get_profile_and_token_returns_the_asserted_directory_user():
    client = WorkOSClient(api_key=API_KEY, client_id=CLIENT_ID, base_url=BASE_URL, max_retries=0)
    got = client.sso.get_profile_and_token(code=CODE)
    profile = got.profile
    assert profile.id.startswith("prof_")
    assert profile.email == EXPECT["email"]
    assert profile.first_name == EXPECT["firstName"]
    assert profile.last_name == EXPECT["lastName"]
    assert profile.idp_id == EXPECT["idpId"]
    assert profile.connection_id == EXPECT["connectionId"]
    assert profile.organization_id == EXPECT["organizationId"]
    assert sorted(profile.groups or []) == sorted(EXPECT["groups"])
    again = client.sso.get_profile(access_token=got.access_token)
    assert again.id == profile.id
    # The code is single use.
    with pytest.raises(Exception):
        client.sso.get_profile_and_token(code=CODE)
