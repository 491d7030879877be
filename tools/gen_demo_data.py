#!/usr/bin/env python3
"""Training and evaluation data for the demo model (tools/train_demo.py).

From tools/demo_data/promessi_sposi.txt (Manzoni, public domain) and a fixed small
tool set, writes message-level samples, then renders them to token ids with the
project's own encoder and tokenizer (the `render_chat` example of ds4-cli), so the
model is trained on exactly what `ds4` and `ds4-server` feed it.

Held out for evaluation: chapters XXXVII-XXXVIII (prose and passage chats), and tool
dialogues drawn with another seed: unseen real or made-up city and file names, and
numbers, never a request (tool + arguments) that occurs in training. Training tool
conversations hold one to three requests, mostly with made-up names and numbers up to
999, so that copying the requested value is the only way to get a call right.

    python3 tools/gen_demo_data.py --out DIR [--render BIN] [--extra N]

--extra N appends N conversations (two to four requests, mostly weather) whose
names are built on word-initial pieces of the real vocabulary or on letter-level
syllables, for the re-spelling of a name between request and call; those with a
token the base set lacks are dropped (about 73%). The base set and the held-out
prompts do not change with it (default 0: the data of the shipped model).

Outputs in DIR: {prose,chat,tools}.{train,eval}.jsonl.gz (rendered ids + masks),
the same before rendering as *.msgs.jsonl, eval_prose.txt (the held-out text, for
`ds4 --perplexity-file`) and tool_prompts.eval.json (held-out tool prompts with the
expected call, for the end-to-end test). Copies of those two are committed in
tools/demo_data/ (what the README's perplexity table and the server test use).
"""
import argparse
import gzip
import json
import os
import random
import re
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "demo_data", "promessi_sposi.txt")

# ----------------------------------------------------------------------------- prose


def paragraphs(text):
    """hard-wrapped text -> paragraphs (lines joined), chapter headings kept as their own
    paragraphs"""
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in block.strip().splitlines()]
        p = " ".join(ln for ln in lines if ln)
        if p:
            out.append(p)
    return out


def split_chapters(paras):
    """(train paragraphs, eval paragraphs): eval = chapter XXXVII onwards"""
    for i, p in enumerate(paras):
        if p.startswith("CAPITOLO XXXVII."):
            return paras[:i], paras[i:]
    raise SystemExit("chapter XXXVII not found")


def sentences(p):
    return [s for s in re.split(r"(?<=[.!?;])\s+", p) if s]


def passages(paras, rng, n, lo=40, hi=110):
    """n (passage, continuation) pairs of whole sentences, lo..hi words each"""
    sents = [s for p in paras if not p.startswith("CAPITOLO") for s in sentences(p)]
    out = []
    while len(out) < n:
        i = rng.randrange(0, len(sents) - 40)

        def take(j):
            words, k = 0, j
            target = rng.randint(lo, hi)
            while words < target and k < len(sents):
                words += len(sents[k].split())
                k += 1
            return " ".join(sents[j:k]), k
        a, j = take(i)
        b, _ = take(j)
        out.append((a, b))
    return out


CONTINUE_IT = [
    "Continua questo passo:\n\n{p}",
    "Continua il racconto:\n\n{p}",
    "Prosegui il testo seguente.\n\n{p}",
    "Come continua? {p}",
    "{p}\n\nContinua.",
]
CONTINUE_EN = ["Continue this passage:\n\n{p}", "Please continue the story:\n\n{p}"]
SUMMARY = [
    "Riassumi questo passo:\n\n{p}",
    "Fammi un riassunto breve:\n\n{p}",
    "Summarize this passage:\n\n{p}",
]
STORY = [
    "Raccontami una storia",
    "Raccontami una storia.",
    "Scrivi un passo di un romanzo.",
    "Scrivi qualcosa in italiano.",
    "Raccontami qualcosa dei Promessi sposi.",
    "Tell me a story.",
    "Scrivi una pagina di racconto.",
    "Dimmi una storia",
]
SYSTEMS = [None, "You are a helpful assistant", "Sei un assistente utile.", ""]
THINK_CONT = [
    "L'utente vuole che continui il racconto dal punto in cui si interrompe.",
    "Devo proseguire il passo nello stesso stile.",
    "Continuo la narrazione.",
]
THINK_SUM = ["L'utente chiede un riassunto: riprendo le frasi essenziali del passo.",
             "Devo riassumere il passo in breve."]
THINK_STORY = ["L'utente vuole una storia: racconto un episodio.", "Scrivo un passo di racconto."]


def with_system(msgs, rng):
    s = rng.choice(SYSTEMS)
    return msgs if s is None else [{"role": "system", "content": s}] + msgs


def chat_samples(paras, rng, n):
    out = []
    pairs = passages(paras, rng, n)
    story_paras = [p for p in paras if len(p.split()) > 30 and not p.startswith("CAPITOLO")]
    for a, b in pairs:
        r = rng.random()
        thinking = rng.random() < 0.5
        if r < 0.55:
            user = rng.choice(CONTINUE_IT if rng.random() < 0.85 else CONTINUE_EN).format(p=a)
            answer, why = b, rng.choice(THINK_CONT)
        elif r < 0.8:
            user = rng.choice(SUMMARY).format(p=a + " " + b)
            ss = sentences(a + " " + b)
            # extractive: the first and the last sentence (there is no abstractive
            # summary to learn from)
            answer = "In breve: " + (ss[0] if len(ss) < 2 else ss[0] + " " + ss[-1])
            why = rng.choice(THINK_SUM)
        else:
            user = rng.choice(STORY)
            answer = " ".join(sentences(rng.choice(story_paras))[:6])
            why = rng.choice(THINK_STORY)
        asst = {"role": "assistant", "content": answer}
        if thinking:
            asst["reasoning_content"] = why
        out.append({"messages": with_system([{"role": "user", "content": user}, asst], rng),
                    "thinking": thinking})
    return out


# ----------------------------------------------------------------------------- tools

TOOL_FUNCS = [
    {"name": "get_weather", "description": "Get the current weather for a city.",
     "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}},
                    "required": ["city"]}},
    {"name": "read_file", "description": "Read a text file and return its content.",
     "parameters": {"type": "object", "properties": {"path": {"type": "string", "description": "File path"}},
                    "required": ["path"]}},
    {"name": "add", "description": "Add two numbers.",
     "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                    "required": ["a", "b"]}},
]


def tool_objects(api):
    """the raw tool JSON each API's client sends (the server renders it as given)"""
    if api == "chat":
        return [{"type": "function", "function": f} for f in TOOL_FUNCS]
    if api == "responses":
        return [{"type": "function", "function": {"type": "function", **f}} for f in TOOL_FUNCS]
    return [{"type": "function", "function": {"name": f["name"], "description": f["description"],
                                              "input_schema": f["parameters"]}} for f in TOOL_FUNCS]


CITIES_TRAIN = """Milano Roma Napoli Torino Palermo Genova Bologna Firenze Bari Catania Venezia Verona
Messina Padova Trieste Brescia Parma Taranto Prato Modena Reggio Perugia Livorno Ravenna Cagliari Foggia
Rimini Salerno Ferrara Sassari Latina Monza Siracusa Pescara Bergamo Trento Vicenza Terni Novara Piacenza
Ancona Andria Udine Arezzo Cesena Lecce Pesaro Barletta Alessandria Spezia Pisa Pistoia Lucca Como Lecco
Paris London Berlin Madrid Lisbon Vienna Prague Warsaw Dublin Oslo Stockholm Helsinki Copenhagen Amsterdam
Brussels Zurich Geneva Athens Istanbul Cairo Tokyo Osaka Seoul Beijing Shanghai Mumbai Delhi Bangkok Sydney
Melbourne Toronto Montreal Chicago Boston Seattle Denver Miami Dallas Houston Lima Bogota Santiago Nairobi
Lagos Dakar Casablanca Marseille Lyon Nice Munich Hamburg Cologne Frankfurt Barcelona Valencia Seville Porto
Krakow Budapest Bucharest Sofia Belgrade Zagreb Ljubljana Bratislava Tallinn Riga Vilnius Reykjavik Edinburgh
Manchester Liverpool Glasgow Cardiff Belfast Lecco Bolzano Aosta Matera Potenza Campobasso Catanzaro
Nantes Toulouse Lille Strasbourg Rennes Grenoble Dijon Bremen Hannover Stuttgart Nuremberg Dortmund Essen Bonn
Malaga Bilbao Zaragoza Granada Murcia Palma Coimbra Braga Faro Utrecht Eindhoven Groningen Leiden Ghent Bruges
Liege Basel Bern Lausanne Lugano Innsbruck Linz Brno Ostrava Gdansk Poznan Wroclaw Lodz Debrecen Szeged Varna
Plovdiv Thessaloniki Patras Izmir Ankara Antalya Beirut Amman Riyadh Muscat Karachi Lahore Dhaka Kolkata
Chennai Pune Colombo Kathmandu Yangon Saigon Taipei Nagoya Sapporo Fukuoka Incheon Wuhan Chengdu Shenzhen
Singapore Kuala Lumpur Brisbane Adelaide Hobart Darwin Wellington Christchurch Calgary Ottawa Quebec Halifax
Winnipeg Portland Austin Detroit Memphis Nashville Orlando Tampa Omaha Tucson Fresno Sacramento Oakland Anchorage
Honolulu Monterrey Guadalajara Cancun Medellin Cali Caracas Montevideo Asuncion Cordoba Rosario Mendoza Recife
Salvador Fortaleza Curitiba Manaus Belem Luanda Kinshasa Accra Abuja Kampala Kigali Harare Lusaka Maputo Durban
Windhoek Tripoli Algiers Oran Rabat Tangier Marrakech Fez Khartoum Addis Mogadishu Djibouti Asmara Aden Sanaa
Tbilisi Yerevan Baku Tashkent Almaty Bishkek Kabul Tehran Shiraz Tabriz Mosul Basra Aleppo Damascus Haifa
Nicosia Valletta Monaco Andorra Vaduz Luxembourg Tirana Skopje Podgorica Sarajevo Pristina Chisinau Minsk Kiev
Odessa Lviv Kharkiv Tula Kazan Samara Omsk Irkutsk Murmansk Novgorod Pskov Tver Perm Ufa Sochi Yalta
Assisi Gubbio Orvieto Spoleto Urbino Todi Cortona Volterra Montepulciano Pienza Lucera Trani Molfetta Bitonto
Gaeta Sorrento Amalfi Positano Ravello Ischia Capri Tropea Cefalu Noto Modica Marsala Alghero Olbia Iglesias""".split()
CITIES_EVAL = """Mantova Cremona Lodi Pavia Varese Sondrio Belluno Rovigo Treviso Asti Cuneo Biella Savona Imperia
Grosseto Siena Viterbo Rieti Frosinone Chieti Teramo Brindisi Crotone Trapani Agrigento Ragusa Enna Nuoro Oristano
Vancouver Phoenix Atlanta Havana Quito Manila Hanoi Jakarta Dubai Doha Tunis Oporto Bordeaux Leipzig Dresden
Salzburg Graz Antwerp Rotterdam Gothenburg Bergen Tampere Aarhus Split Kyoto Busan Perth Auckland""".split()
MULTI = ["New York", "San Francisco", "Los Angeles", "Buenos Aires", "Rio de Janeiro", "Hong Kong",
         "Reggio Emilia", "La Spezia", "Città del Messico", "Cape Town"]
MULTI_EVAL = ["San Diego", "Las Vegas", "Sao Paulo", "Ascoli Piceno", "Vibo Valentia", "Tel Aviv"]

DIRS = ["", "docs/", "notes/", "src/", "data/", "/tmp/", "/home/anna/", "config/", "./", "logs/", "progetti/"]
STEMS = ["notes", "todo", "readme", "lista", "spesa", "report", "main", "config", "appunti", "diario", "log",
         "lettera", "ricette", "budget", "index", "setup", "dati", "elenco", "storia", "capitolo1"]
EXTS = [".txt", ".md", ".json", ".csv", ".py", ".rs", ".toml", ".log", ".yaml"]
STEMS_EVAL = ["agenda", "bozza", "contatti", "inventario", "orari", "manifest", "schema", "verbale"]

W_IT = ["Che tempo fa a {c}?", "Com'è il meteo a {c}?", "Dimmi il meteo di {c}.", "Che tempo fa oggi a {c}?",
        "Piove a {c}?", "Fa freddo a {c}?", "Controlla il tempo a {c}, per favore."]
W_EN = ["What's the weather in {c}?", "What is the weather like in {c}?", "Is it raining in {c}?",
        "Check the weather in {c}, please.", "How's the weather in {c} today?"]
R_IT = ["Leggi il file {p}.", "Mostrami il contenuto di {p}", "Cosa c'è nel file {p}?", "Apri {p} e dimmi cosa contiene."]
R_EN = ["Read the file {p}.", "Show me the contents of {p}", "What's in {p}?", "Open {p} and tell me what it says."]
A_IT = ["Quanto fa {a} più {b}?", "Somma {a} e {b}.", "Quanto fa {a} + {b}?", "Calcola {a} + {b}.", "Aggiungi {b} a {a}."]
A_EN = ["What is {a} plus {b}?", "Add {a} and {b}.", "What's {a} + {b}?", "Compute {a} + {b}.", "Sum {a} and {b}."]
CHIT = [("Ciao!", "Ciao! Come posso aiutarti?"), ("Grazie", "Prego!"), ("Hello!", "Hello! How can I help you?"),
        ("Chi sei?", "Sono un piccolo modello dimostrativo: posso dirti il meteo, leggere un file o sommare due numeri."),
        ("Thanks!", "You're welcome!"), ("Buongiorno", "Buongiorno! Come posso aiutarti?")]
CONDS = ["soleggiato", "nuvoloso", "pioggia", "neve", "nebbia", "vento", "sereno", "temporale"]
CONDS_EN = {"soleggiato": "sunny", "nuvoloso": "cloudy", "pioggia": "rain", "neve": "snow", "nebbia": "fog",
            "vento": "windy", "sereno": "clear", "temporale": "storm"}
CONTENTS = ["comprare il pane\nchiamare Lucia", "TODO: finire il capitolo", "name = \"demo\"\nversion = 1",
            "id,nome\n1,Renzo\n2,Lucia", "print('ciao')", "Appunti della riunione: nessuna decisione.",
            "# Titolo\nTesto di prova.", "errore alle 10:42", "{\"ok\": true}", "fn main() {}"]


SYL = ("ba be bi bo bu ca ce ci co cu da de di do du fa fe fi fo ga ge gi go la le li lo lu ma me mi mo mu "
       "na ne ni no nu pa pe pi po pu ra re ri ro ru sa se si so su ta te ti to tu va ve vi vo za zo "
       "bar ber bor cal cor dan del fan fer gan gor lan lar len lin mar mer mor nar nor par per por ran "
       "ren rin sal san sen sol tan ter tor val ver vin zan tra tre bri clo fla gra pro stra sca").split()


# Words of the training chapters, used as names too: thousands of distinct words whose
# tokens differ between " Word" in a request and "Word" in the call, so the model
# learns to re-spell what it copies rather than a fixed list (filled by main()).
NOVEL_WORDS = []


def novel_word(rng, cap):
    w = rng.choice(NOVEL_WORDS)
    return w.capitalize() if cap else w


def pseudo_word(rng, cap):
    """a made-up name: the tool dialogues then teach copying any name, not a list"""
    w = "".join(rng.choice(SYL) for _ in range(rng.randint(2, 4)))
    return w.capitalize() if cap else w


def number(rng):
    """numbers whose tokens (groups of up to three digits) all occur many times"""
    r = rng.random()
    if r < 0.25:
        return rng.randint(0, 100)
    if r < 0.7:
        return rng.randint(0, 999)
    if r < 0.85:
        return rng.randint(1000, 99999)
    if r < 0.93:
        return -rng.randint(1, 999)
    return round(rng.uniform(0, 1000), rng.choice([1, 2]))


# Extra name-copying conversations (--extra): the held-out misses of the first
# copying model were city names whose first piece is spelled differently in the
# request (" Treviso" = " Tre" "vis" "o") and in the call ("Tre" "vis" "o", but
# " Gomar" = " Gom" "ar" -> "G" "omar"). Names built on many word-initial pieces of
# the real vocabulary, and Italian-like names from letter-level syllables, give the
# model that re-spelling for most pieces instead of those of a few hundred words.
ONSETS = ("b c d f g l m n p r s t v z b c d g l m n p r s t v br cr dr fr gr pr tr bl cl fl gl pl "
          "sc sp st gn ch gh qu h k j w y").split()
VOWELS = "a e i o u a e i o a e i o u ia io ie uo".split()
CODAS = [""] * 12 + ["n", "r", "l", "s", "m", "nt", "st"]
VOCAB_STARTS = []  # " Xyz" pieces of the tokenizer (filled by main() when --extra > 0)


def syllable(rng):
    return rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS)


def letters_word(rng, cap):
    w = "".join(syllable(rng) for _ in range(rng.randint(2, 3)))
    if rng.random() < 0.3:  # a vowel-initial name (Asti, Imperia, Enna)
        w = rng.choice("aeiou") + w
    return w.capitalize() if cap else w


def vocab_word(rng, cap):
    """a word-initial vocabulary piece and up to two letter-level syllables"""
    head = rng.choice(VOCAB_STARTS)
    n = rng.choices([0, 1, 2], [0.15, 0.55, 0.3])[0]
    w = head + "".join((syllable(rng) if rng.random() < 0.6 else rng.choice(VOWELS) + rng.choice(CODAS))
                       for _ in range(n))
    return w if cap else w.lower()


def extra_name(rng, cap, avoid):
    while True:
        r = rng.random()
        w = (vocab_word(rng, cap) if r < 0.45 else letters_word(rng, cap) if r < 0.8
             else pseudo_word(rng, cap) if r < 0.9 else novel_word(rng, cap))
        if w.lower() not in avoid:
            return w


def vocab_starts(tokenizer_gz):
    """word-initial pieces of the byte-level vocabulary: 'Ġ' + a capital and 1-5 ASCII
    lowercase letters (the pieces a capitalised name in a request starts with)"""
    with gzip.open(tokenizer_gz, "rt", encoding="utf-8") as f:
        vocab = json.load(f)["model"]["vocab"]
    return sorted(t[1:] for t in vocab if re.fullmatch(r"\u0120[A-Z][a-z]{1,5}", t))


def city(rng, held_out):
    """Training names are mostly made up, so the only way to get the call right is to
    copy the name from the request; held-out names are real and unseen in training."""
    if held_out:  # unseen real names, or made-up names unseen in training
        return rng.choice(CITIES_EVAL + MULTI_EVAL) if rng.random() < 0.5 else pseudo_word(rng, True)
    r = rng.random()
    if r < 0.25:
        return rng.choice(CITIES_TRAIN)
    if r < 0.3:
        return rng.choice(MULTI)
    if r < 0.62:
        return pseudo_word(rng, True)
    if r < 0.94:
        return novel_word(rng, True)
    return pseudo_word(rng, True) + " " + novel_word(rng, True)


def path(rng, held_out):
    if held_out:
        stem = rng.choice(STEMS_EVAL) if rng.random() < 0.5 else pseudo_word(rng, False)
        return rng.choice(DIRS) + stem + rng.choice(EXTS)
    r = rng.random()
    stem = rng.choice(STEMS) if r < 0.25 else pseudo_word(rng, False) if r < 0.6 else novel_word(rng, False)
    if rng.random() < 0.15:
        stem += rng.choice(["_", "-", ""]) + (str(rng.randint(1, 99)) if rng.random() < 0.5 else rng.choice(STEMS))
    d = rng.choice(DIRS) if rng.random() < 0.8 else rng.choice(DIRS) + pseudo_word(rng, False) + "/"
    return d + stem + rng.choice(EXTS)


def fmt_num(x):
    return json.dumps(x)


def tool_dialogue(rng, held_out, api, weights=(0.32, 0.3, 0.3, 0.08), names=None):
    """names: None (the base mix of city() and path()), or a function (rng, cap) -> a
    made-up name used for the city or as the file stem (the extra conversations)"""
    italian = rng.random() < 0.6
    kind = rng.choices(["weather", "read", "add", "chat"], weights)[0]
    if kind == "chat":
        u, a = rng.choice(CHIT)
        return {"user": u, "call": None, "final": a}
    if kind == "weather":
        c = city(rng, held_out) if names is None else names(rng, True)
        u = rng.choice(W_IT if italian else W_EN).format(c=c)
        t = rng.randint(-10, 38)
        cond = rng.choice(CONDS)
        result = json.dumps({"city": c, "temp_c": t, "condition": cond if italian else CONDS_EN[cond]},
                            ensure_ascii=False)
        final = (f"A {c} ci sono {t} °C, {cond}." if italian
                 else f"In {c} it is {t} °C, {CONDS_EN[cond]}.")
        return {"user": u, "call": ("get_weather", {"city": c}), "result": result, "final": final}
    if kind == "read":
        p = (path(rng, held_out) if names is None
             else rng.choice(DIRS) + names(rng, False) + rng.choice(EXTS))
        u = rng.choice(R_IT if italian else R_EN).format(p=p)
        content = rng.choice(CONTENTS)
        final = (f"Il file {p} contiene:\n{content}" if italian else f"The file {p} contains:\n{content}")
        return {"user": u, "call": ("read_file", {"path": p}), "result": content, "final": final}
    a, b = number(rng), number(rng)
    u = rng.choice(A_IT if italian else A_EN).format(a=fmt_num(a), b=fmt_num(b))
    s = a + b
    if isinstance(s, float):
        s = round(s, 2)
    final = (f"{fmt_num(a)} + {fmt_num(b)} = {fmt_num(s)}." if True else "")
    return {"user": u, "call": ("add", {"a": a, "b": b}), "result": json.dumps({"result": s}), "final": final}


TOOL_SYSTEMS = [None, None, "You are a helpful assistant", "Sei un assistente. Usa gli strumenti quando servono.", ""]
THINK_TOOL = {"get_weather": "L'utente chiede il meteo: uso get_weather.",
              "read_file": "Devo leggere il file: uso read_file.",
              "add": "Serve una somma: uso add."}


def tool_sample(ds, rng, api, thinking, sys_text=-1):
    """one conversation of one or more exchanges (request, call, result, answer):
    later requests make the model call with the arguments of the LAST request, not of
    an earlier one still in view"""
    if isinstance(ds, dict):
        ds = [ds]
    tools = tool_objects(api)
    if sys_text == -1:
        sys_text = rng.choice(TOOL_SYSTEMS)
    msgs = [{"role": "system", "content": sys_text or "", "tools": tools}]
    for i, d in enumerate(ds):
        msgs.append({"role": "user", "content": d["user"]})
        if d["call"] is None:
            a = {"role": "assistant", "content": d["final"]}
            if thinking:
                a["reasoning_content"] = "Nessuno strumento serve: rispondo."
            msgs.append(a)
            continue
        name, args = d["call"]
        cid = f"call_{i}"
        call = {"role": "assistant", "content": "",
                "tool_calls": [{"id": cid, "type": "function",
                                "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)}}]}
        if thinking:
            call["reasoning_content"] = THINK_TOOL[name]
        msgs.append(call)
        msgs.append({"role": "tool", "tool_call_id": cid, "content": d["result"]})
        fin = {"role": "assistant", "content": d["final"]}
        if thinking:
            fin["reasoning_content"] = "Ho il risultato: rispondo."
        msgs.append(fin)
    return {"messages": msgs, "thinking": thinking}


def call_key(d):
    return None if d["call"] is None else (d["call"][0], json.dumps(d["call"][1], sort_keys=True))


# ----------------------------------------------------------------------------- main


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def render(binary, src, dst):
    with open(src, "rb") as fi, gzip.open(dst, "wb") as fo:
        out = subprocess.run([binary], stdin=fi, capture_output=True, check=True).stdout
        fo.write(out)
    return out.count(b"\n")


def filter_extras(path, n_base, seen, seen_gen):
    """keep an extra conversation only when all its tokens occur in the base set, and
    those it generates are generated there: a new token would only add an embedding
    and a head row (the shipped file grows, ~0.7 kB gzipped a row) that no held-out
    prompt uses, since those are filtered on the base set"""
    kept, dropped = [], 0
    with gzip.open(path, "rt") as f:
        for i, line in enumerate(f):
            if i >= n_base:
                r = json.loads(line)
                if not (set(r["ids"]) <= seen and {t for t, m in zip(r["ids"], r["mask"]) if m} <= seen_gen):
                    dropped += 1
                    continue
            kept.append(line)
    with gzip.open(path, "wt") as f:
        f.writelines(kept)
    print(f"extra conversations: {dropped} dropped for a token not in the base set, {len(kept) - n_base} kept")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--render", default=None, help="render_chat binary (default: cargo's release example)")
    ap.add_argument("--chats", type=int, default=12000)
    ap.add_argument("--tools", type=int, default=60000, help="training tool conversations (1-3 requests each)")
    ap.add_argument("--extra", type=int, default=0,
                    help="extra name-copying conversations (2-4 requests, mostly weather) after the base set")
    ap.add_argument("--seed", type=int, default=10)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    with open(SRC, encoding="utf-8") as f:
        paras = paragraphs(f.read())
    train_p, eval_p = split_chapters(paras)
    held = {w.lower() for w in CITIES_EVAL + STEMS_EVAL + [x for m in MULTI_EVAL for x in m.split()]}
    NOVEL_WORDS[:] = sorted({w.lower() for p in train_p for w in re.findall(r"[a-zàèéìòù]{4,}", p.lower())} - held)
    rng = random.Random(a.seed)
    erng = random.Random(a.seed + 1000)

    sets = {
        "prose.train": [{"text": "\n\n".join(train_p)}],
        "prose.eval": [{"text": "\n\n".join(eval_p)}],
        "chat.train": chat_samples(train_p, rng, a.chats),
        "chat.eval": chat_samples(eval_p, erng, 400),
    }
    apis = ["chat", "responses", "messages"]
    tr, train_calls = [], set()
    for i in range(a.tools):
        n = rng.choices([1, 2, 3], [0.45, 0.35, 0.2])[0]
        ds = [tool_dialogue(rng, False, None) for _ in range(n)]
        train_calls.update(call_key(d) for d in ds)
        tr.append(tool_sample(ds, rng, apis[i % 3], rng.random() < 0.3))
    cands = []
    for i in range(3000):
        d = tool_dialogue(erng, True, None)
        if d["call"] is not None and call_key(d) in train_calls:
            continue  # held out means an unseen request, not only unseen words
        cands.append((d, tool_sample(d, erng, apis[i % 3], erng.random() < 0.3)))
    # The extra name-copying conversations come from their own generator, after the
    # base set and the held-out candidates, so both stay as they were without them
    # (same held-out prompts, filtered against the base set): none of them uses a
    # held-out name or request. Two to four requests each, mostly weather: more
    # call turns per row than the base set's long tools block leaves room for.
    n_base = len(tr)
    if a.extra:
        VOCAB_STARTS[:] = vocab_starts(os.path.join(HERE, "..", "assets", "tokenizer",
                                                    "deepseek-v4-tokenizer.json.gz"))
        avoid = set(held)
        cand_keys = set()
        for d, _ in cands:
            if d["call"] is None:
                continue
            cand_keys.add(call_key(d))
            v = d["call"][1]
            if "city" in v:
                avoid.update(x.lower() for x in [v["city"]] + v["city"].split())
            if "path" in v:
                avoid.add(os.path.splitext(os.path.basename(v["path"]))[0].lower())
        xrng = random.Random(a.seed + 2000)
        names = lambda r, cap: extra_name(r, cap, avoid)  # noqa: E731
        while len(tr) < n_base + a.extra:
            n = xrng.choices([2, 3, 4], [0.3, 0.4, 0.3])[0]
            ds = [tool_dialogue(xrng, False, None, weights=(0.65, 0.17, 0.13, 0.05), names=names)
                  for _ in range(n)]
            if any(call_key(d) in cand_keys for d in ds if d["call"] is not None):
                continue
            tr.append(tool_sample(ds, xrng, apis[len(tr) % 3], xrng.random() < 0.3))
        print(f"extra name conversations: {a.extra} ({len(VOCAB_STARTS)} word-initial vocabulary pieces)")
    sets["tools.train"] = tr

    with open(os.path.join(a.out, "eval_prose.txt"), "w", encoding="utf-8") as f:
        f.write("\n\n".join(eval_p) + "\n")
    binary = a.render or os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(HERE, "..", "target")),
                                      "release", "examples", "render_chat")
    for name, rows in sets.items():
        src = os.path.join(a.out, f"{name}.msgs.jsonl")
        write_jsonl(src, rows)
        n = render(binary, src, os.path.join(a.out, f"{name}.jsonl.gz"))
        print(f"{name}: {n} samples")
    # Held-out tool dialogues are kept only when every token of them occurs in the
    # training tool dialogues, and every token of their answers in a training answer:
    # the model has no trained row for a token it never saw (the held-out names are
    # new words, not new tokens).
    seen, seen_gen = set(), set()
    with gzip.open(os.path.join(a.out, "tools.train.jsonl.gz"), "rt") as f:
        for i, line in enumerate(f):
            if i == n_base:  # the base set alone decides (the held-out list stays fixed)
                break
            r = json.loads(line)
            seen.update(r["ids"])
            seen_gen.update(t for t, m in zip(r["ids"], r["mask"]) if m)
    if a.extra:
        filter_extras(os.path.join(a.out, "tools.train.jsonl.gz"), n_base, seen, seen_gen)
    src = os.path.join(a.out, "tools.cands.msgs.jsonl")
    write_jsonl(src, [c[1] for c in cands])
    render(binary, src, os.path.join(a.out, "tools.cands.jsonl.gz"))
    with gzip.open(os.path.join(a.out, "tools.cands.jsonl.gz"), "rt") as f:
        rendered = [json.loads(line) for line in f]
    ev, by_tool, dropped = [], {"get_weather": [], "read_file": [], "add": []}, 0
    for (d, sample), r in zip(cands, rendered):
        # and every token the model must generate was generated in a training dialogue
        if not (set(r["ids"]) <= seen and {t for t, m in zip(r["ids"], r["mask"]) if m} <= seen_gen):
            dropped += 1
            continue
        if len(ev) < 600:
            ev.append(sample)
        if d["call"] is not None:
            by_tool[d["call"][0]].append({"user": d["user"], "tool": d["call"][0], "arguments": d["call"][1]})
    print(f"held-out tool dialogues: {dropped} of {len(cands)} dropped for a token never seen in training; "
          f"kept calls per tool: { {k: len(v) for k, v in by_tool.items()} }")
    # the prompts take the tools in turn (the first few, as CI runs them, cover all three)
    prompts = [p for trio in zip(*by_tool.values()) for p in trio][:300]
    src = os.path.join(a.out, "tools.eval.msgs.jsonl")
    write_jsonl(src, ev)
    print(f"tools.eval: {render(binary, src, os.path.join(a.out, 'tools.eval.jsonl.gz'))} samples")
    # The held-out prompts as the server test sends them (a bare request with the
    # tools, no thinking), with the expected call: training scores the call turn of
    # these teacher-forced (all its tokens argmax-right = what greedy decoding emits).
    calls = []
    for i, p in enumerate(prompts):
        d = {"user": p["user"], "call": (p["tool"], p["arguments"]), "result": "{}", "final": "ok"}
        calls.append(tool_sample(d, rng, apis[i % 3], False, sys_text=None))
    src = os.path.join(a.out, "tools_calls.eval.msgs.jsonl")
    write_jsonl(src, calls)
    print(f"tools_calls.eval: {render(binary, src, os.path.join(a.out, 'tools_calls.eval.jsonl.gz'))} samples")
    with open(os.path.join(a.out, "tool_prompts.eval.json"), "w", encoding="utf-8") as f:
        json.dump({"tools": TOOL_FUNCS, "prompts": prompts}, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
