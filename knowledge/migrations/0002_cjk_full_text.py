"""Full-text search for Chinese, Japanese and Korean: CJK runs are indexed as character bigrams.

PostgreSQL has no CJK word segmenter, so its parser turns a whole clause ("我怎么退货") into one
lexeme no query ever matches. Two IMMUTABLE SQL functions fix both sides:

* ``cjk_bigrams(text)``: every run of CJK characters becomes its overlapping bigrams (a one-character
  run stays one character), other text is returned unchanged. Bigrams are separated by U+001F and
  each run is wrapped in U+001E: control characters every text-search parser treats as separators,
  whatever the locale, and that ``knowledge.retrieval`` strips from ts_headline output again.
  ``Chunk.search_vector`` is now ``to_tsvector('english', cjk_bigrams(...))``; without CJK it is
  exactly what it was.
* ``cjk_websearch_to_tsquery(config, query)``: without CJK it IS ``websearch_to_tsquery(config,
  query)``. With CJK: the rest of the query through websearch_to_tsquery, OR the query's CJK
  bigrams, OR-ed with each other (a one-character run as a prefix, ``'退':*``). OR, not AND: a
  question's bigrams include function words and junk across word borders ("么退" in "怎么退货"),
  so AND almost never matches one passage; ts_rank_cd then ranks passages with more matches first.

The generated column cannot be altered in place (Django refuses, and ALTER ... SET EXPRESSION needs
PostgreSQL 17), so it is dropped and added again; PostgreSQL recomputes it for every chunk.
"""

from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import CombinedSearchVector, SearchConfig, SearchVector, SearchVectorField
from django.db import migrations, models

import knowledge.models

# Han (with extension A, B-G and compatibility ideographs), the iteration marks 々〆〇, kana
# (with half-width katakana) and Hangul: the scripts written without spaces between words.
CJK = (
    r"\u1100-\u11ff\u3005-\u3007\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    r"\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f"
)
# CJK and full-width punctuation: dropped from queries so it never becomes a search term (it is a
# letter to the parser in the C locale).
CJK_PUNCTUATION = r"\u3000-\u3004\u3008-\u303f\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65"

CREATE_FUNCTIONS = f"""
CREATE OR REPLACE FUNCTION cjk_bigrams(input text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
SELECT CASE
  WHEN input !~ '[{CJK}]' THEN input
  ELSE (
    SELECT string_agg(
             CASE WHEN run ~ '^[{CJK}]'
                  THEN chr(30) || CASE WHEN length(run) = 1 THEN run ELSE (
                           SELECT string_agg(substr(run, i, 2), chr(31) ORDER BY i)
                           FROM generate_series(1, length(run) - 1) AS i
                       ) END || chr(30)
                  ELSE run END,
             '' ORDER BY n)
    FROM regexp_matches(input, '[{CJK}]+|[^{CJK}]+', 'g') WITH ORDINALITY AS m(parts, n),
         LATERAL (SELECT m.parts[1] AS run) AS r
  )
END
$fn$;

CREATE OR REPLACE FUNCTION cjk_websearch_to_tsquery(config regconfig, query text) RETURNS tsquery
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
SELECT CASE
  WHEN query !~ '[{CJK}]' THEN websearch_to_tsquery(config, query)
  ELSE websearch_to_tsquery(config, regexp_replace(query, '[{CJK}{CJK_PUNCTUATION}]+', ' ', 'g'))
       || (SELECT to_tsquery(config, string_agg(term, ' | ' ORDER BY term))
           FROM (SELECT DISTINCT '''' || bigram || '''' || CASE WHEN length(bigram) = 1 THEN ':*' ELSE '' END
                 FROM regexp_split_to_table(
                        cjk_bigrams(array_to_string(ARRAY(
                            SELECT m[1] FROM regexp_matches(query, '[{CJK}]+', 'g') AS m
                        ), ' ')),
                        '[^{CJK}]+') AS bigram
                 WHERE bigram <> '') AS terms(term))
END
$fn$;
"""

DROP_FUNCTIONS = """
DROP FUNCTION IF EXISTS cjk_websearch_to_tsquery(regconfig, text);
DROP FUNCTION IF EXISTS cjk_bigrams(text);
"""


class Migration(migrations.Migration):

    dependencies = [
        ("knowledge", "0001_initial"),
    ]

    operations = [
        migrations.RunSQL(CREATE_FUNCTIONS, DROP_FUNCTIONS),
        migrations.RemoveIndex(model_name="chunk", name="chunk_search_vector_gin"),
        migrations.RemoveField(model_name="chunk", name="search_vector"),
        migrations.AddField(
            model_name="chunk",
            name="search_vector",
            field=models.GeneratedField(
                db_persist=True,
                expression=CombinedSearchVector(
                    SearchVector(knowledge.models.CjkBigrams("heading_path"), config="english", weight="A"),
                    "||",
                    SearchVector(knowledge.models.CjkBigrams("text"), config="english", weight="B"),
                    SearchConfig("english"),
                ),
                output_field=SearchVectorField(),
            ),
        ),
        migrations.AddIndex(
            model_name="chunk",
            index=GinIndex(fields=["search_vector"], name="chunk_search_vector_gin"),
        ),
    ]
