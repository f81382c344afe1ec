"use strict";
// The page of `infer.py serve` (utils/inference/server.py). The search is the page's URL: ?q=TEXT or
// ?similar=ID, with k and search (the mode); submitting the form or following "more like this" loads a new URL.
// Every element is built with textContent and attributes: no text of the store or of a query is parsed as HTML.

const params = new URLSearchParams(location.search);
const byId = (id) => document.getElementById(id);

async function getJson(url) {
  const response = await fetch(url);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function play(card, query) {
  const video = document.createElement("video");
  Object.assign(video, {className: "thumb", src: "/video?" + query, controls: true, autoplay: true,
                        muted: true, loop: true});
  card.querySelector(".play").replaceWith(video);
  video.play().catch(() => {});  // a browser refusing autoplay still shows the controls
}

function show(results, k, mode) {
  const cards = results.map((hit) => {
    const card = byId("result").content.firstElementChild.cloneNode(true);
    Object.assign(card.dataset, {id: hit.id, rank: hit.rank, score: hit.score});
    const query = new URLSearchParams({id: hit.id}).toString();
    const thumb = card.querySelector(".thumb");
    thumb.src = "/thumb?" + query;
    thumb.alt = hit.id;
    card.querySelector(".rank").textContent = hit.rank + ".";
    card.querySelector(".score").textContent = hit.score.toFixed(4);
    card.querySelector(".id").textContent = hit.id;
    card.querySelector(".play").addEventListener("click", () => play(card, query));
    card.querySelector(".similar").href = "/?" + new URLSearchParams({similar: hit.id, k, search: mode});
    return card;
  });
  byId("results").replaceChildren(...cards);
}

async function main() {
  const info = await getJson("/api/info");
  document.title = "video search: " + info.store;
  byId("store").textContent = `${info.store}: ${info.count} videos`;
  if (info.notice) {
    byId("notice").textContent = info.notice;
    byId("notice").hidden = false;
  }
  byId("k").max = info.max_k;
  byId("k").value = params.get("k") || info.default_k;
  if (info.modes.includes(params.get("search"))) byId("mode").value = params.get("search");
  byId("q").value = params.get("q") || "";
  const k = byId("k").value, mode = byId("mode").value;
  let request, what;
  if (params.has("similar")) {
    request = "/api/similar?" + new URLSearchParams({id: params.get("similar"), k, search: mode});
    what = "videos like " + params.get("similar");
  } else if (params.get("q")) {
    request = "/api/search?" + new URLSearchParams({q: params.get("q"), k, search: mode});
    what = params.get("q");
  } else {
    byId("status").textContent = "Type what the video shows.";
    return;
  }
  byId("status").textContent = "searching...";
  const body = await getJson(request);
  show(body.results, k, mode);
  byId("status").textContent = `${body.results.length} results: ${what}`;
}

main().catch((error) => {
  byId("status").textContent = error.message;
  byId("status").classList.add("error");
});
