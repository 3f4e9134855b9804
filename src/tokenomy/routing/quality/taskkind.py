"""What kind of task a prompt is, and how demanding it is within its kind (numpy + re only).

A lexicon/regex classifier, multilingual where it is cheap (English, German, French, Spanish,
Italian, Portuguese, Polish, Japanese, Chinese cue words). It reads what the prompt asks for,
never which data set it resembles, so it carries to prompt sets the router never saw:

- kinds (`KINDS`): chit-chat, rewriting (edits, typo fixes, tone), translation, extraction /
  formatting, factual recall, open writing, coding, maths, multi-step reasoning, proofs /
  derivations, and `open` (none of the cues);
- demand within a kind (`DEMAND_NAMES`): formal objects (theorems, integrals, matrices), systems
  depth (concurrency, kernels, consensus, allocators), domain depth (specialist vocabulary),
  constraints, asked-for steps / justification, quantities, code size, the instruction's length in
  characters and in words (`log_words`: runs of letters, so digits, formulas and code symbols do not
  count; a long text to edit or translate is payload, not demand: `instruction_text` cuts it off),
  and whether a maths question comes with its answer options (`math_choice`).

The instruction is the part before a payload marker (a colon or a blank line followed by a long
block); for payload kinds (rewrite, translation, extraction) length is read from it only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from tokenomy.routing.quality.formats import MATH_WORD_PROBLEM, option_count, prompt_format

KINDS = ("chitchat", "rewrite", "translation", "extraction", "factual", "writing", "coding", "math",
         "reasoning", "proof", "open")
PAYLOAD_KINDS = frozenset({"rewrite", "translation", "extraction"})
DEMAND_NAMES = ("formal", "systems", "domain", "constraints", "steps", "log_quantities", "log_code_lines",
                "log_instruction_chars", "log_instruction_words", "log_words", "very_short", "question_marks",
                "explain_why", "math_choice")
FEATURE_NAMES = tuple(f"kind_{k}" for k in KINDS) + DEMAND_NAMES

def _rx(*alts: str) -> re.Pattern:
    """One alternation, matched against LOWER-CASED text (re.IGNORECASE costs ~1.5x per regex)."""
    return re.compile("|".join(alts))


# ---- kind cues (each a compiled alternation; CJK cues are plain substrings)
_CHITCHAT = _rx(
    r"^\W*(?:(?:many |so much |a lot |vielen |muchas |mille |molte )?(?:thanks?|danke|gracias|merci|grazie)(?: (?:so much|a lot|beaucoup|schön|sehr))?|hi|hey|hello|hiya|yo|ok(?:ay)?|k|thanks?|thank you|thx|ty|bye|good ?bye|cheers|lol|haha|cool|nice|"
    r"great|good (?:morning|night|evening|afternoon)|how are you|what'?s up|sup|see you|talk (?:later|tomorrow)|"
    r"hallo|servus|moin|danke|tschüss|guten (?:morgen|tag|abend)|wie geht'?s|bonjour|salut|merci|bonsoir|"
    r"au revoir|hola|gracias|adiós|adios|buenos días|qué tal|ciao|grazie|buongiorno|olá|ola|obrigad[oa]|"
    r"tudo bem|cześć|czesc|dzięki|dzieki|dziękuję|dzien dobry|dzień dobry|co słychać|привет|спасибо)\b",
    r"こんにちは|こんばんは|おはよう|ありがとう|さようなら|你好|您好|谢谢|再见|早上好|晚安")
_CHITCHAT_Q = _rx(r"\b(?:tell me a joke|what'?s your name|who are you|how are you|are you (?:a )?(?:bot|human))\b")
_TRANSLATE = _rx(
    # (a translation into predicate logic or symbols is a formalisation, not a language task)
    r"\btranslat\w*(?!.{0,40}\b(?:logic|formulae?|symbol\w*|predicates?)\b)|\bhow do (?:you|i) say\b|\bin (?:french|german|spanish|italian|polish|japanese|chinese|english|"
    r"portuguese|russian|korean|dutch)\b\s*[?.]?$|\bwhat is '[^']+' in\b|\bwhat is \"[^\"]+\" in\b",
    r"\bübersetz\w*|\bwie sagt man\b|\btradu\w+|\bcomment dit-on\b|\bcómo se dice\b|\bprzetłumacz\w*|\btłumacz\w*|"
    r"\bперевед\w*",
    r"翻訳|訳して|翻译|译成|翻成")
_REWRITE = _rx(
    r"\b(?:fix|correct|proofread)\b.{0,40}\b(?:typos?|spelling|grammar|mistakes|errors|punctuation)\b",
    r"\b(?:rewrite|rephrase|paraphrase|reword|shorten|simplify|polish|edit)\b",
    # (an object must not follow: "make it a longer dress" is a word problem, not an edit)
    r"\bmake (?:this|it|the (?:text|sentence|email|paragraph))\b(?! an? )(?:\W+\w+){0,4}?\W+(?:shorter|longer|polite|friendlier|formal|"
    r"informal|clearer|simpler|concise)\w*",
    r"\b(?:convert|change|put|turn)\b.{0,30}\b(?:uppercase|lowercase|past tense|present tense|future tense|"
    r"bullet(?:ed)? list|alphabetical order|title case|passive voice|active voice)\b",
    r"\bcapitali[sz]e\b|\bchange all\b|\breplace (?:all|every)\b|\bin alphabetical order\b",
    r"\bkorrigier\w*|\bumschreib\w*|\bformulier\w* (?:um|neu)|\bcorrige\w*|\breformul\w*|\breescrib\w*|"
    r"\bpopraw\w*|\bprzeredaguj\b|\bcorreggi\w*|\briscriv\w*",
    r"書き直|修正して|丁寧に|改写|改得|润色|修改")
_EXTRACT = _rx(
    r"\bextract\b|\bwhat is the (?:email|phone|address|date|name|number)\b(?=.*(?:['\"“„«:]|\n))|"
    r"\blist (?:the|all) (?:names|dates|"
    r"numbers|people|emails|places)\b|\bfrom (?:the following|this) text\b|\bformat (?:this|it|the)\b|"
    r"\bconvert (?:this|it|the)\b.{0,30}\b(?:json|csv|yaml|xml|table|markdown)\b|\bas (?:a )?(?:csv|json|table)\b|"
    r"\badd a comma\b|\bmake the first letter\b|\bwhich (?:phone|email|date)\b",
    r"\bwelche telefonnummer\b|\bextrahier\w*|\bextrai[st]\w*|\bwyodrębnij\b|\bestrai\w*",
    r"抽出|提取")
_FACTUAL = _rx(
    r"^\W*(?:what|who|when|where|which|how many|how much|how old|how tall|how far|what'?s)\b.{0,80}[?]?\s*$",
    r"^\W*(?:was|wer|wann|wo|wie viele|welche[rs]?|quel(?:le)?s?|qui|quand|où|combien|qué|quién|cuándo|dónde|"
    r"cuánt[oa]s?|cuál|jaka|jaki|jakie|kto|kiedy|gdzie|ile|chi|quando|dove|quanti)\b.{0,80}\??\s*$",
    r"(?:どこ|いつ|誰|何|いくつ)(?:ですか|でしょうか)|是什么|有几|在哪|是谁|多少")
_WRITING = _rx(
    r"\b(?:write|compose|draft|create)\b.{0,40}\b(?:poem|haiku|limerick|song|story|note|message|email|letter|"
    r"toast|slogan|tweet|caption|joke|speech|essay|blog post|description|bio)\b",
    r"\b(?:haiku|poem|limerick)\b|\bsuggest (?:\w+ )?(?:names|titles|ideas)\b|\bgive me (?:a |some )?(?:funny |"
    r"creative |good )?(?:names?|titles?|ideas?|slogans?)\b",
    r"\bschreib\w*\b.{0,40}\b(?:gedicht|geschichte|brief|nachricht)\b|\bgedicht\b|\bécri[st]\w*\b|\bpoème\b|"
    r"\bhaïku\b|\bescribe\b|\bpoema\b|\bnapisz\b|\bwiersz\w*\b|\bscrivi\b|\bpoesia\b",
    r"俳句|詩を|短歌|写一首|诗|作文")
# Coding cues are words that mean code in any context. Everyday words that also name code things
# ("class", "function", "method", "program", "code", "go", "kernel", "graph", "stack", "atomic") count
# only in a coding phrase: in the training sources they were mostly law, history, psychology and maths
# questions ("a class action", "the function f", "the federal program", "the penal code").
_CODING = _rx(
    r"```|`[^`\n]{2,80}`|\b(?:implement|implementation of|refactor|debug\w*|compile[sd]?|compiler|api|apis|endpoint|regex|regexp|"
    r"sql|query|queries|script|scripts|algorithm|algorithms|mutex|struct|pointer|pointers|parser|lexer|"
    r"interpreter|bytecode|allocator|malloc|garbage collector|segfault|stack trace|traceback|unit tests?|"
    r"git|npm|pip|docker|json|yaml|html|css|dataframe|pandas|numpy|recursion|recursive|o\(n\w*\)|o\(1\))\b",
    r"\b(?:python|javascript|typescript|rust|golang|c\+\+|c#|haskell|kotlin|swift ?ui|cuda|verilog|bash|"
    r"linux|java|php|ruby on rails|scala|perl|matlab|react|node\.?js)\b|\bin go\b|\bgo (?:code|service|program)\b",
    r"\b(?:write|implement|create|fix|optimi[sz]e|debug|test|call|define|refactor) (?:a |an |the |this |my |me a )?"
    r"(?:\w+ )?(?:function|class|method|program|code|script|module|kernel|endpoint|query)\b",
    r"\b(?:function|method|class|program|code|script) (?:that|which|to) (?:returns?|takes?|prints?|reads?|"
    r"computes?|checks?|sorts?|parses?|implements?)\b|\b(?:this|my|the following|your) code\b|\bcode (?:snippet|review)\b|"
    r"\bprogramming\b|\bsource code\b|\b[a-z_][a-z0-9_]*\([^()\n]{0,40}\)\s*(?:[{:;]|->|=>)",
    r"\b(?:data structure|linked list|hash ?(?:map|table)|b\+?-?tree|red-black tree|binary (?:search )?tree|"
    r"min-?heap|max-?heap|priority queue|trie|binary search|dynamic programming|lru cache|thread pool|"
    r"ring buffer|lock-?free|deadlocks?|race condition|multi-?thread\w*|concurrent (?:queue|map|hash)|cuda kernel|"
    r"gpu kernel|linux kernel|kernel module)\b",
    r"\bimplementier\w*|\bimplément\w*|\bimplementa\w*|\bzaimplementuj\w*|\bprogrammier\w*|\bprogrammation\b|"
    r"\bprogramación\b|\bprogramowani\w*",
    r"実装|コード|プログラム|实现|代码|程序|编写")
_MATH = _rx(
    # counting questions ("in how many ways", "how many distinct ...") are combinatorics, not recall
    r"\bhow many (?:ways|different|distinct|possible|arrangements|combinations|subsets|paths)\b|\barrangements?\b",
    r"\b(?:integral|integrate|derivative|differentiate|eigen\w*|matrix|matrices|determinant|equation|solve|"
    r"compute|calculate|evaluate|probability|expected value|variance|recurrence|closed form|polynomial|"
    r"series|sum of|limit|logarithm|modulo|combinator\w*|permutations?|binomial|tiling|tile|perimeter|area of|"
    r"volume of|radius|diameter|circumference|hypotenuse|square (?:feet|meters|metres|inches|yards|miles)|"
    r"cubic (?:feet|meters|metres|inches|centimet\w+))\b",
    r"\d\s*[-+*/^]\s*\d|\bx\^|\^\{|\\frac|\\int|\\sum|∫|∑|√|[=<>]\s*-?\d",
    r"\bberechne\w*|\bintegral\w*|\bcalcul\w*|\brésou\w*|\bresuelve\b|\becuación\b|\boblicz\w*|\brozwiąż\b|"
    r"\brównani\w*",
    r"積分|方程式|行列|固有値|計算|求|矩阵|特征值|方程|积分|概率")
_REASON = _rx(
    r"\b(?:puzzle|riddle|logicians?|schedule|plan|optimi[sz]e|trade-?offs?|strategy|step by step|"
    r"break[s -]?even|cumulative|given these constraints|which year|in which year)\b",
    r"\b(?:if .{3,80} then|each (?:sees|knows|person)|at least one|no two)\b")
# Logic puzzles (seating, calendars, truth-tellers, family relations; two chained comparisons) are
# short: these cues are read only on instructions of up to _PUZZLE_MAX_CHARS, which keeps them off
# the long prompts that set the gate's p99.
_PUZZLE = _rx(
    r"\b(?:sits?|sitting|seated|stands?|standing) (?:to the |directly |immediately )?(?:left|right|next to|"
    r"opposite|between)\b|\bday (?:after tomorrow|before yesterday)\b|\bwhat day (?:of the week )?(?:is|was|will)\b|"
    r"\b(?:truth-?tellers?|liars?|knights? and knaves)\b|\bhow many (?:brothers|sisters|siblings|cousins)\b|"
    r"\bwho (?:is|was|must be|could be) (?:the )?(?:oldest|youngest|tallest|shortest|culprit|liar|guilty)\b")
_COMPARISON = _rx(r"\b(?:older|younger|taller|shorter|faster|slower|heavier|lighter) than\b")
_PUZZLE_MAX_CHARS = 600
_PROOF = _rx(
    r"\b(?:prove|proof|show that|demonstrate that|derive|derivation|lemma|theorem|corollary|qed|by induction|"
    r"contradiction|if and only if|iff)\b",
    r"\bbeweis\w*|\bzeige,? dass\b|\bherleit\w*|\bdémontr\w*|\bdémonstration\b|\bdériv\w*|\bdemuestr\w*|"
    r"\bdemostra\w*|\budowodnij\b|\bdowód\b|\bwyprowadź\b|\bdimostra\w*",
    r"証明|導いて|導出|证明|推导|导出")

# ---- demand cues
_FORMAL = _rx(
    r"\b(?:theorem|lemma|prove|proof|integral|eigen\w*|matrix|group|ring|field|manifold|topolog\w*|compact|"
    r"continuous|converge\w*|inequality|induction|recurrence|polynomial|isomorph\w*|homomorph\w*|abelian|"
    r"countable|uncountable|irrational|rational|prime|primes|graph|metric space|inner product|hilbert|banach|"
    r"differential|pde|ode|lagrang\w*|hamiltonian|fourier|laplace|asymptotic|complexity|amortis\w*|amortiz\w*|"
    r"np-?hard|undecidable|halting|integral domain|galois|radicals|eigenvalues?|beta function|fixed point)\b",
    r"\^\{|\\[a-z]+|∫|∑|∀|∃|√|\bo\(|[a-z]\^\d|\bx_\d|\bmod\b",
    r"\bbeweis\w*|\bsatz\b|\bfolge\b|\bintegral\b|\bdémontr\w*|\bsuite de cauchy\b|\bdemuestr\w*|\birracional\w*|"
    r"\bgrupa\b|\budowodnij\b|\bpodgrup\w*|\babelow\w*",
    r"証明|素数|積分|固有|证明|整环|矩阵|特征|定理")
_SYSTEMS = _rx(
    r"\b(?:lock-?free|wait-?free|lockless|atomics?|memory[ -]order\w*|data race|race condition|mutex|"
    r"concurren\w*|multi-?threaded|threads?|thread pool|work[ -]stealing|mpmc|spsc|aba|cas|compare-and-swap|"
    r"kernel|cuda|simd|avx\d*|neon|gpu|shared memory|bank conflicts|cache line|allocator|malloc|garbage collector|"
    r"mark-and-sweep|consensus|raft|paxos|pbft|byzantine|distributed|replication|linearizab\w*|"
    r"sequential consistency|crdt|write-ahead log|wal|checkpoint\w*|crash|recovery|scheduler|cfs|cgroup|"
    r"interpreter|compiler|bytecode|parser|lexer|nfa|dfa|b\+?-?tree|red-black|fibonacci heap|o\(1\)|"
    r"o\(n(?: log n)?\)|character device|ring buffer|kernel module|vm stack)\b",
    r"ロックフリー|メモリオーダー|无锁|内存序|拜占庭|分布式|lock-freie|sans verrou|bez blokad|lock-free",
)
_DOMAIN = _rx(
    r"\b(?:quantum|qcd|qed|chromodynamics|renormali[sz]\w*|asymptotic freedom|beta function|lattice|"
    r"wilson-fisher|critical exponent|epsilon expansion|holograph\w*|ads/cft|string theory|gauge|lagrangian|"
    r"hamiltonian|schrödinger|schrodinger|eigenstate|fermion|boson|hadron|collider|spectroscop\w*|"
    r"crispr|cas9|off-target|genom\w*|proteom\w*|pharmacokinetic\w*|atiyah-singer|index theorem|gauss-bonnet|"
    r"cohomolog\w*|homotop\w*|galois|black-scholes|stochastic|martingale|itô|ito's|delta-hedged|"
    r"shor|quantum fourier|period-finding|p (?:vs\.?|versus|kontra) np|relativi[sz]ation|natural proofs|"
    r"thermodynamic\w*|entropy|navier-stokes|turbulen\w*|euler-lagrange|stationary action|"
    r"linearizab\w*|paxos|raft|pbft|cfs|vruntime|cgroup)\b",
    r"量子|色力学|漸近的自由|ベータ関数|拜占庭|共识|ガロア|伽罗瓦|kwantow\w*",
)
_CONSTRAINT = _rx(
    r"\b(?:must|without|at most|at least|no more than|exactly|only|ensure|guarantee|such that|so that|while|"
    r"keeping|invariants?|including|with|under|safe|handle|support(?:ing)?|and (?:explain|prove|analy[sz]e|"
    r"show|derive|benchmark))\b")
_STEPS = _rx(
    r"\b(?:step|steps|show (?:the|your|each|all)|justify|explain (?:why|how|each)|derive|prove|analy[sz]e|"
    r"generali[sz]e|compare|in detail|full computation|each step|show each|then)\b",
    r"\bbegründe\w*|\bjeden schritt\b|\bétape\w*|\bpaso\w*|\bkrok\w*",
    r"説明して|導いて|详细|解释|步骤")
_EXPLAIN_WHY = _rx(r"\b(?:why|explain|how does|how do|what causes|mechanism|erkläre|expliquez|explique|explica|"
                   r"wyjaśnij|spiega)\b", r"説明|なぜ|解释|为什么")
_QUANTITY = re.compile(r"\d+(?:[.,]\d+)?")
# CJK characters (kana, ideographs, hangul): one carries about what three Latin characters do
# (a word), so lengths count each as three
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uff00-\uffef]")
# words: runs of letters (digits, formulas and punctuation are not words); a CJK run is one match, so
# its characters are added at half a word each
_WORD = re.compile(r"[^\W\d_]+")
_CODE_FENCE = re.compile(r"```.*?(?:```|$)", re.S)
# a payload: text after "...:" / a blank line, at least this long, the instruction being before it
_PAYLOAD_SPLIT = re.compile(r":\s*\n|\n\s*\n|:\s+(?=['\"«“„「])")
_PAYLOAD_MIN_CHARS = 120


def instruction_text(text: str) -> str:
    """The instruction part of a prompt: before a long payload block (text to edit, translate,
    extract from), else the whole prompt."""
    m = _PAYLOAD_SPLIT.search(text)
    if m and len(text) - m.end() >= _PAYLOAD_MIN_CHARS and m.start() <= 400:
        return text[:m.start()]
    return text


@dataclass(frozen=True, slots=True)
class TaskProfile:
    kind: str
    kind_scores: dict[str, float]
    demand: dict[str, float]

    def vector(self) -> np.ndarray:
        onehot = [1.0 if k == self.kind else 0.0 for k in KINDS]
        return np.array(onehot + [self.demand[n] for n in DEMAND_NAMES])


def _hits(rx: re.Pattern, text: str) -> int:
    return len(rx.findall(text))


def kind_scores(instr: str) -> dict[str, float]:
    """Cue strength per kind of the instruction text (0 = no cue)."""
    head = instr[:600]
    s = {k: 0.0 for k in KINDS}
    short = len(instr.strip()) <= 40
    m = _CHITCHAT.search(head.strip())
    # a greeting in front of a request ("Hi, can you give me a recipe for challah?") is the request
    if m and len(instr) <= 80 and (len(_WORD.findall(head.strip()[m.end():])) <= 5 or _CHITCHAT_Q.search(head)):
        s["chitchat"] = 2.0 + (1.0 if short else 0.0)
    if _CHITCHAT_Q.search(head):
        s["chitchat"] = max(s["chitchat"], 2.0)
    s["translation"] = 3.0 * min(_hits(_TRANSLATE, head), 1)
    s["rewrite"] = 2.5 * min(_hits(_REWRITE, head), 1)
    s["extraction"] = 2.2 * min(_hits(_EXTRACT, head), 1)
    s["factual"] = 1.5 * min(_hits(_FACTUAL, instr), 1) if len(instr) <= 120 else 0.0
    s["writing"] = 1.8 * min(_hits(_WRITING, head), 1)
    s["coding"] = 1.2 * min(_hits(_CODING, instr), 3)
    s["math"] = 1.0 * min(_hits(_MATH, instr), 3)
    puzzle = 0
    if len(instr) <= _PUZZLE_MAX_CHARS:
        puzzle = _hits(_PUZZLE, instr) + (1 if _hits(_COMPARISON, instr) >= 2 else 0)
    s["reasoning"] = 1.0 * min(_hits(_REASON, instr) + puzzle, 3)
    s["proof"] = 2.0 * min(_hits(_PROOF, instr), 2)
    if s["factual"] and (s["math"] or s["reasoning"] or s["proof"]):
        s["factual"] = 0.0   # "how many ways ...?", "what day ...?": a question shape, a maths/logic task
    return s


# Cue regexes read at most the first _HEAD and last _TAIL characters (a long document's cues are
# at its ends; this bounds the decision's cost on 30k-character prompts); lengths see the whole text.
_HEAD, _TAIL = 700, 200


def _cue_text(text: str) -> str:
    return text if len(text) <= _HEAD + _TAIL else text[:_HEAD] + "\n" + text[-_TAIL:]


def profile(text: str) -> TaskProfile:
    """Task kind and within-kind demand of a prompt."""
    instr = instruction_text(text)
    scores = kind_scores(_cue_text(instr).lower())
    best = max(KINDS[:-1], key=lambda k: scores[k])
    kind = best if scores[best] > 0 else "open"
    # (a word problem is short: prompt_format calls anything over 2,000 characters open)
    if kind in ("open", "factual", "math") and len(text) <= 2000 and prompt_format(text) == MATH_WORD_PROBLEM:
        kind = "reasoning"   # a word problem: several quantities chained by steps
    # an edit / translation request about a maths text is still an edit; a proof asked inside a
    # coding task stays coding unless the proof cue dominates
    whole = instr if kind in PAYLOAD_KINDS else text[:4000]   # lengths: capped at 4,000 characters
    read = _cue_text(whole).lower()
    code_lines = sum(m.group(0).count("\n") for m in _CODE_FENCE.finditer(read))
    n_cjk = round(len(_CJK.findall(read)) * len(whole) / max(len(read), 1))
    n_chars = len(whole) + 2 * n_cjk
    # words of the cue text, scaled to the whole like n_cjk (a regex over 4,000 characters per decision
    # cost ~15 % of its time at p99); exact for prompts up to _HEAD + _TAIL characters
    n_words = (len(_WORD.findall(read)) + len(_CJK.findall(read)) / 2) * len(whole) / max(len(read), 1)
    demand = {
        "formal": min(math.log1p(_hits(_FORMAL, read)) / 2.0, 1.5),
        "systems": min(math.log1p(_hits(_SYSTEMS, read)) / 2.0, 1.5),
        "domain": min(math.log1p(_hits(_DOMAIN, read)) / 1.5, 1.5),
        "constraints": min(math.log1p(_hits(_CONSTRAINT, read)) / 2.5, 1.5),
        "steps": min(math.log1p(_hits(_STEPS, read)) / 2.0, 1.5),
        "log_quantities": min(math.log1p(len(_QUANTITY.findall(read))) / 3.0, 1.5),
        "log_code_lines": min(math.log1p(code_lines) / 4.0, 1.5),
        "log_instruction_chars": math.log1p(n_chars) / 8.0,
        "log_instruction_words": math.log1p(whole.count(" ") + whole.count("\n") + n_cjk // 2) / 6.0,
        "log_words": math.log1p(n_words),
        "very_short": 1.0 if len(text.strip()) + 2 * len(_CJK.findall(text[:30])) <= 25 else 0.0,
        "question_marks": min(read.count("?") + read.count("？"), 3) / 3.0,
        "explain_why": min(_hits(_EXPLAIN_WHY, read), 2) / 2.0,
        # a maths question with its answer options given: both models often fail and the weak one's
        # guess is right one time in four or so, so the stronger model's edge is smaller there
        "math_choice": 1.0 if kind == "math" and option_count(text[:4000]) >= 2 else 0.0,
    }
    return TaskProfile(kind, scores, demand)


def features(text: str) -> np.ndarray:
    """The router's task feature vector (len(FEATURE_NAMES))."""
    return profile(text).vector()
