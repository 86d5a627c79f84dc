"""An MDE client against casefile: tokens from msal and from azure-identity, then the API.

Only the login authority and the CA differ from a script written for Microsoft's cloud.
Settings come from the environment:
  CASEFILE_URL            https://HOST:PORT of the casefile server (no path)
  CASEFILE_TENANT         the application's tenant (`casefile app create --tenant`, default `default`)
  CASEFILE_CLIENT_ID      the application's client id
  CASEFILE_CLIENT_SECRET  its secret
  CASEFILE_CA             PEM file of the CA to trust (the private CA: <data_dir>/tls/ca.pem)
  CASEFILE_MACHINE        the machine (id or computer name) to collect from
  CASEFILE_CASE           a case number to tag the action with (ExternalID)
Prints one JSON object: the machine ids each token listed, and the new action.
"""

import json
import os
import sys

import msal
import requests
from azure.identity import ClientSecretCredential

base = os.environ["CASEFILE_URL"].rstrip("/")
tenant = os.environ["CASEFILE_TENANT"]
client_id = os.environ["CASEFILE_CLIENT_ID"]
secret = os.environ["CASEFILE_CLIENT_SECRET"]
ca = os.environ["CASEFILE_CA"]
scope = "https://api.securitycenter.microsoft.com/.default"

# msal: the authority is the server's URL and the tenant. Instance discovery would ask
# Microsoft's cloud to vouch for the host: off (msal < 1.24: validate_authority=False).
app = msal.ConfidentialClientApplication(
    client_id,
    client_credential=secret,
    authority=f"{base}/{tenant}",
    instance_discovery=False,
    # requests lets REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE override this: set them to ca.pem or unset them.
    verify=ca,
)
result = app.acquire_token_for_client(scopes=[scope])
if "access_token" not in result:
    sys.exit(f"msal: {result.get('error')}: {result.get('error_description')}")
msal_token = result["access_token"]

# azure-identity: the authority is the server's URL alone; the tenant is its own argument.
credential = ClientSecretCredential(
    tenant,
    client_id,
    secret,
    authority=base,
    disable_instance_discovery=True,
    connection_verify=ca,
)
azure_token = credential.get_token(scope).token

listed = {}
for library, token in (("msal", msal_token), ("azure_identity", azure_token)):
    machines = requests.get(f"{base}/api/machines", headers={"Authorization": f"Bearer {token}"}, verify=ca)
    machines.raise_for_status()
    listed[library] = [m["id"] for m in machines.json()["value"]]

machine = os.environ["CASEFILE_MACHINE"]
collect = requests.post(
    f"{base}/api/machines/{machine}/collectInvestigationPackage",
    headers={"Authorization": f"Bearer {azure_token}"},
    json={"Comment": "Collected by a playbook", "ExternalID": os.environ.get("CASEFILE_CASE")},
    verify=ca,
)
collect.raise_for_status()
print(json.dumps({"machines": listed, "action": collect.json()}))
