// Click a header to sort by it, again to reverse; numbers (data-v) compare as numbers, blanks go last.
function sortBy(th){const body=th.closest("table").tBodies[0],i=th.cellIndex,num=th.dataset.type==="num";
const dir=th.dataset.dir==="asc"?"desc":"asc",sign=dir==="asc"?1:-1;
for(const other of th.parentNode.cells)delete other.dataset.dir;th.dataset.dir=dir;
const key=td=>{const v=td.dataset.v??td.textContent.trim();return v===""?null:num?Number(v):v;};
const rows=Array.from(body.rows,r=>[key(r.cells[i]),r]);
rows.sort(([a],[b])=>a===null?(b===null?0:1):b===null?-1:sign*(num?a-b:String(a).localeCompare(String(b))));
for(const [,r] of rows)body.appendChild(r);}
document.querySelectorAll("table.sortable th").forEach(th=>th.addEventListener("click",()=>sortBy(th)));
