// Where the live pages keep a token: sessionStorage of this tab, never the console or the server
// logs. A token in the address (?token= or #token=) is taken once and removed from it.
const key = (scope) => `confbot.token.${scope}`;

/** The token for `scope` from the address or this tab's storage, or null. */
export function takeToken(scope, param = "token") {
  const url = new URL(location.href);
  const fromHash = new URLSearchParams(url.hash.slice(1)).get(param);
  const fromQuery = url.searchParams.get(param);
  const token = fromQuery || fromHash;
  if (token) {
    url.searchParams.delete(param);
    url.hash = "";
    history.replaceState(null, "", url.pathname + url.search);
    storeToken(scope, token);
    return token;
  }
  try {
    return sessionStorage.getItem(key(scope));
  } catch (_) {
    return null; // storage disabled: the form asks again
  }
}

export function storeToken(scope, token) {
  try {
    sessionStorage.setItem(key(scope), token);
  } catch (_) { /* storage disabled: the token lives only in memory */ }
}

export function forgetToken(scope) {
  try {
    sessionStorage.removeItem(key(scope));
  } catch (_) { /* nothing stored */ }
}
